// Every consumer of the model description agrees with it, for each architecture preset: the
// checkpoint check (names and shapes of what make-model writes and the formats read), the shard
// reader, the offload layout, the partition and plan --check. The table itself is checked against
// Hugging Face checkpoints (tests/fixtures/hf) and for covering each tensor once per TP group.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "offload/shard_layout.h"
#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/model_writer.h"
#include "runtime/model_presets.h"
#include "runtime/models/model_description.h"
#include "runtime/weights.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

std::string test_tmp() {
  const char* t = std::getenv("STRATA_TEST_TMP");
  return t != nullptr ? t : fs::temp_directory_path().string();
}

// A preset shrunk to a few layers and a small vocabulary, keeping its head layout (GQA, biases, ties).
ModelConfig small_variant(const std::string& preset, bool tied) {
  ModelConfig c = model_preset("tiny");
  const ModelConfig p = model_preset(preset);
  c.arch = p.arch;
  c.qkv_bias = p.qkv_bias;
  c.n_heads = 8;
  c.n_kv_heads = p.n_kv_heads == p.n_heads ? 8 : p.n_kv_heads < p.n_heads / 4 ? 1 : 2;
  c.tied_embeddings = tied;
  c.n_layers = 3;
  c.qk_norm = p.qk_norm;
  if (p.moe.enabled()) {  // a few small experts, the preset's routing options and dense layers kept
    c.moe = p.moe;
    c.moe.n_experts = 8;  // splits over the tests' TP sizes up to 8
    c.moe.n_used = 2;
    c.moe.expert_ffn = c.arch == "mixtral" ? c.ffn : 32;
    if (c.moe.shared_ffn > 0) c.moe.shared_ffn = 64;
    std::erase_if(c.moe.dense_layers, [&](int64_t l) { return l >= c.n_layers; });
  }
  return c;
}

// Tensors of one layer: attention (+ biases, + q/k norms), the two norms, then the dense MLP or the router,
// the routed experts and the shared expert.
int64_t layer_tensor_count(const ModelConfig& c, int64_t layer) {
  const int64_t attention = 6 + (c.qkv_bias ? 3 : 0) + (c.qk_norm ? 2 : 0);
  if (!c.moe.sparse_layer(layer)) return attention + 3;
  return attention + 1 + 3 * c.moe.n_experts + (c.moe.shared_ffn > 0 ? 4 : 0);
}

struct Variant {
  std::string preset;
  bool tied;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  for (const std::string& p : model_preset_names()) out.push_back({p, false});
  out.push_back({"tiny", true});
  out.push_back({"qwen2-tiny", true});
  return out;
}

std::string write_model(const ModelConfig& c, const std::string& format, const std::string& tag) {
  MakeModelOptions o;
  o.config = c;
  o.format = format;
  o.dtype = "f32";
  o.out = (fs::path(test_tmp()) / cat("model_description_", tag, ".", format)).string();
  o.threads = 1;
  make_model(o);
  return make_model_output_path(o);
}

std::map<std::string, const TensorRef*> by_name(const std::vector<TensorRef>& refs) {
  std::map<std::string, const TensorRef*> out;
  for (const TensorRef& r : refs) out[r.name] = &r;
  return out;
}

TEST(ModelDescription, CheckpointsHoldExactlyTheTableTensors) {
  for (const Variant& v : variants()) {
    const ModelConfig c = small_variant(v.preset, v.tied);
    for (const std::string format : {"safetensors", "gguf"}) {
      SCOPED_TRACE(cat(v.preset, v.tied ? " tied " : " ", format));
      const std::string path = write_model(c, format, cat(v.preset, v.tied ? "_tied" : ""));
      const auto ck = open_checkpoint(path);
      const std::vector<TensorRef> want = model_tensors(ck->config());
      const auto index = by_name(want);
      std::set<std::string> seen;
      for (const TensorEntry& e : ck->entries()) {
        const auto it = index.find(e.name);
        if (it == index.end()) {
          EXPECT_EQ(find_slot(ck->config(), e.name), nullptr) << e.name << " has a slot but is not required";
          continue;  // extras such as rope_freqs.weight are kept, not read
        }
        seen.insert(e.name);
        EXPECT_EQ(e.shape, it->second->slot->full_shape(ck->config())) << e.name;
      }
      EXPECT_EQ(seen.size(), want.size());
      int64_t layer_tensors = 0;
      for (int64_t l = 0; l < c.n_layers; ++l) layer_tensors += layer_tensor_count(c, l);
      EXPECT_EQ(static_cast<int64_t>(want.size()), 1 + 1 + (c.tied_embeddings ? 0 : 1) + layer_tensors);
    }
  }
}

TEST(ModelDescription, HuggingFaceCheckpointsMatchTheTable) {
  const fs::path fixtures = fs::path(std::getenv("STRATA_SOURCE_DIR")) / "tests/fixtures/hf";
  int checked = 0;
  for (const auto& dir : fs::directory_iterator(fixtures)) {
    if (!fs::exists(dir.path() / "config.json")) continue;
    SCOPED_TRACE(dir.path().string());
    const auto ck = open_checkpoint(dir.path().string());
    for (const TensorRef& t : model_tensors(ck->config()))
      EXPECT_EQ(ck->entry(t.name).shape, t.slot->full_shape(ck->config())) << t.name;
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

// Every element of a split tensor is held by exactly the ranks the split says: once per TP group for
// rows/cols splits (KV heads: once per replica of the head), every rank for replicated tensors.
TEST(ModelDescription, SlicesCoverEachTensorOncePerGroup) {
  for (const Variant& v : variants()) {
    const ModelConfig c = small_variant(v.preset, v.tied);
    for (int tp : {1, 2, 4, 8}) {
      SCOPED_TRACE(cat(v.preset, " tp ", tp));
      for (const TensorSlot& slot : model_description(c).slots) {
        if (!slot.present(c)) continue;
        const Shape full = slot.full_shape(c);
        if (slot.split_dim() < 0) continue;
        const int64_t n = full[static_cast<size_t>(slot.split_dim())];
        std::vector<int> held(static_cast<size_t>(n), 0);
        for (int r = 0; r < tp; ++r) {
          const ShardSpec spec = ShardSpec::make(c, r, tp, 0, c.n_layers);
          const SliceRange s = slot_slice(slot, c, spec);
          ASSERT_LE(s.offset + s.count, n) << slot.name;
          for (int64_t i = s.offset; i < s.offset + s.count; ++i) ++held[static_cast<size_t>(i)];
          Shape local = full;
          local[static_cast<size_t>(slot.split_dim())] = s.count;
          EXPECT_EQ(local_shape(slot, c, spec), local);
        }
        const bool kv = slot.shape[static_cast<size_t>(slot.split_dim())] == Dim::kKv;
        const int copies = kv && tp > c.n_kv_heads ? tp / static_cast<int>(c.n_kv_heads) : 1;
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(held[static_cast<size_t>(i)], copies) << slot.name << " element " << i;
      }
    }
  }
}

parallel::Plan plan_of(int tp, int pp, const std::string& dtype = "") {
  std::string yaml = cat("model:\n  path: unused\n", dtype.empty() ? "" : "  dtype: " + dtype + "\n",
                         "parallel:\n  tensor: ", tp, "\n  pipeline: ", pp, "\n");
  parallel::ParsedPlan parsed = parallel::parse_plan(yaml, "inline.yaml");
  EXPECT_TRUE(parsed.ok());
  return parsed.plan;
}

// The shard reader, the offload layout and the partition hold, on every rank, the table's tensors
// with the table's local shapes; the partition's ShardSpec is ShardSpec::make's.
TEST(ModelDescription, ReaderOffloadLayoutAndPartitionAgree) {
  for (const Variant& v : variants()) {
    const ModelConfig base = small_variant(v.preset, v.tied);
    const std::string path = write_model(base, "safetensors", cat("ranks_", v.preset, v.tied ? "_tied" : ""));
    const auto ck = open_checkpoint(path);
    const ModelConfig& c = ck->config();
    for (const auto& [tp, pp] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {4, 3}, {8, 2}}) {
      SCOPED_TRACE(cat(v.preset, v.tied ? " tied" : "", " tp ", tp, " pp ", pp));
      parallel::PartitionOptions options;
      options.world_size = tp * pp;
      options.default_dtype = DType::kF32;  // the checkpoint's
      const parallel::Partition part = parallel::make_partition(plan_of(tp, pp), c, options);
      for (const parallel::RankPartition& r : part.ranks) {
        const ShardSpec spec = ShardSpec::make(c, r.tp, tp, r.layer_begin, r.layer_end);
        EXPECT_EQ(r.shard.q_head_begin, spec.q_head_begin);
        EXPECT_EQ(r.shard.kv_head_begin, spec.kv_head_begin);
        EXPECT_EQ(r.shard.ffn_begin, spec.ffn_begin);
        EXPECT_EQ(r.shard.vocab_count, spec.vocab_count);
        EXPECT_EQ(r.shard.first_stage, r.pp == 0);
        EXPECT_EQ(r.shard.last_stage, r.pp == pp - 1);
        const std::vector<TensorRef> want = rank_tensors(c, spec);

        ASSERT_EQ(r.shards.size(), want.size());
        const std::vector<offload::ShardTensor> layout = offload::shard_tensors(*ck, spec);
        ASSERT_EQ(layout.size(), want.size());
        const ShardReader reader(*ck, spec);
        const GlobalWeights g = reader.globals();
        for (size_t i = 0; i < want.size(); ++i) {
          const TensorRef& t = want[i];
          const Shape local = local_shape(*t.slot, c, spec);
          EXPECT_EQ(r.shards[i].name, t.name);
          EXPECT_EQ(r.shards[i].local_shape, local) << t.name;
          EXPECT_EQ(r.shards[i].kind, t.slot->split) << t.name;
          EXPECT_EQ(layout[i].ref.name, t.name);
          EXPECT_EQ(layout[i].shape, local) << t.name;
          EXPECT_EQ(layout[i].nbytes, r.shards[i].bytes) << t.name;  // f32 on both sides
          if (t.layer < 0) {
            GlobalWeights copy = g;
            EXPECT_EQ(slot_field(t, copy).shape(), local) << t.name;
          } else {
            LayerWeights w = reader.layer(t.layer);
            EXPECT_EQ(slot_field(t, w).shape(), local) << t.name;
          }
        }
        // The model finds what it needs where it looks: the head on the last stage, tied or not.
        EXPECT_EQ(g.output.defined(), r.shard.last_stage);
        EXPECT_EQ(g.embed.defined(), r.shard.first_stage || (r.shard.last_stage && c.tied_embeddings));
      }
    }
  }
}

// plan --check names the row-parallel (kCols) slots of the table when a quantized TP split would cut a
// quantization block.
TEST(ModelDescription, PlanCheckNamesTheRowParallelSlots) {
  ModelConfig c = model_preset("tiny");
  c.n_heads = 8, c.n_kv_heads = 8, c.head_dim = 8, c.ffn = 96;  // q 64 and ffn 96: split by 4 into 16 and 24
  const auto diags = parallel::validate_plan(plan_of(4, 1, "q8_0"), c, parallel::PartitionOptions{});
  std::string all;
  for (const auto& d : diags) all += d.message + "\n";
  std::set<std::string> named;
  for (const TensorSlot& s : model_description(c).slots)
    if (s.split == TpSplit::kCols && all.find(cat("blk.*.", s.name)) != std::string::npos) named.insert(std::string(s.name));
  EXPECT_EQ(named, (std::set<std::string>{"attn_output.weight", "ffn_down.weight"})) << all;
}

TEST(ModelDescription, UnknownArchitectureIsAClearError) {
  ModelConfig c = model_preset("tiny");
  c.arch = "gpt2";
  try {
    model_description(c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'gpt2' has no model description"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata
