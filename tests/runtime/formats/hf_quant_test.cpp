// tests/runtime/formats/hf_quant_test.cpp: quantized Hugging Face checkpoints (issue 23) against the tools
// that wrote them (fixtures from tools/reference/make_hf_quant_fixtures.py: compressed-tensors' own
// compressors and decompressors, AutoAWQ's dequantize_gemm, GPTQModel's dequantize_weight, DeepSeek FP8's
// documented dequantization):
// every transcoded layer dequantizes bit for bit to the reference's f32 weights; the whole model's logits
// match transformers run on those weights; greedy continuations are equal; bad input is refused by name.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/hf_quant.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/quant_blocks.h"
#include "tests/test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

json::object fixture_info(const std::string& dir) { return json::parse(read_text(dir + "/ids.json")).as_object(); }

std::vector<int32_t> ints(const json::value& v) {
  std::vector<int32_t> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int32_t>(x.as_int64()));
  return out;
}

uint64_t fnv1a64(const std::vector<float>& v) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  for (size_t i = 0; i < v.size() * 4; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

std::vector<float> dequantized(const Checkpoint& ck, const std::string& name) {
  const Tensor t = ck.tensor(name);
  std::vector<float> y(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kF32) std::memcpy(y.data(), t.raw(), y.size() * 4);
  else dequantize_row(t.dtype(), t.raw(), y.data(), t.numel());
  return y;
}

class HfQuant : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return test::fixture("hf_quant/" + GetParam()); }
};

TEST_P(HfQuant, EveryLayerDequantizesBitForBitToTheReference) {
  const json::object info = fixture_info(dir());
  const auto ck = open_checkpoint(dir());
  const std::string expect(info.at("expect_dtype").as_string());
  int checked = 0;
  for (const auto& kv : info.at("dequant_fnv1a64").as_object()) {
    const std::string hf(kv.key());
    std::string canonical;
    for (const TensorEntry& e : ck->entries())
      if (e.file_name.rfind(hf.substr(0, hf.size() - 7), 0) == 0) canonical = e.name;  // "...q_proj" prefix
    ASSERT_FALSE(canonical.empty()) << hf << " has no transcoded entry";
    EXPECT_EQ(dtype_name(ck->entry(canonical).dtype), expect) << hf;
    const std::vector<float> y = dequantized(*ck, canonical);
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv1a64(y)));
    EXPECT_EQ(std::string(hex), std::string(kv.value().as_string())) << hf << " (" << canonical << ", "
                                                                       << dtype_name(ck->entry(canonical).dtype)
                                                                       << ") differs from the reference dequantization";
    ++checked;
  }
  EXPECT_EQ(checked, 14);
}

// strata's CPU matmul rounds activations to 8-bit blocks of 32 for block-quantized weights (quant_dot.h):
// over these 2 layers and the head that moves logits by up to 2.2% of their range (measured 1.3-2.2%); the
// bound is 3.5%. The f32 layers (act-order GPTQ) stay at f32 rounding (measured 1e-6 of the range).
TEST_P(HfQuant, LogitsOfEveryPositionMatchTransformersOnTheDequantizedWeights) {
  const json::object info = fixture_info(dir());
  const test::NpyArray expected = test::read_npy(dir() + "/logits.npy");
  launcher::SessionOptions options;
  options.model_path = dir();
  launcher::ModelSession session(options);
  session.prepare(64);
  const Tensor logits = session.generator().score(ints(info.at("ids")));
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const float* got = logits.data<float>();
  double worst = 0, range = 0;
  for (size_t i = 0; i < expected.data.size(); ++i) {
    worst = std::max(worst, std::abs(double{got[i]} - expected.data[i]));
    range = std::max(range, std::abs(double{expected.data[i]}));
  }
  const bool f32_layers = std::string(info.at("expect_dtype").as_string()) == "f32";
  EXPECT_LT(worst, (f32_layers ? 1e-5 : 3.5e-2) * range) << GetParam() << ": max |logit difference| " << worst
                                                         << " over logits of magnitude up to " << range;
}

TEST_P(HfQuant, GreedyContinuationMatchesTransformers) {
  const json::object info = fixture_info(dir());
  launcher::SessionOptions options;
  options.model_path = dir();
  launcher::ModelSession session(options);
  session.prepare(64);
  GenerationRequest r;
  r.prompt = ints(info.at("greedy_prompt"));
  const std::vector<int32_t> want = ints(info.at("greedy_continuation"));
  r.max_new_tokens = static_cast<int64_t>(want.size());
  EXPECT_EQ(session.generator().generate({r})[0].tokens, want);
}

INSTANTIATE_TEST_SUITE_P(Formats, HfQuant,
                         ::testing::Values("gptq_int4_g32_sym", "gptq_int4_g64_asym", "gptq_int8_pc_v2",
                                           "gptq_int4_actorder", "awq_int4_g64", "fp8_block128", "ct_fp8_channel",
                                           "ct_w8a8_int8", "ct_w4a16_g32", "ct_w4a16_g64_asym"));

// ---- TP: the plan check sees the transcoded block type ----

TEST(HfQuantPlan, TensorParallelSizesKeepTheTranscodedBlocksWhole) {
  const auto q4 = open_checkpoint(test::fixture("hf_quant/gptq_int4_g32_sym"));
  EXPECT_EQ(parallel::checkpoint_weight_dtype(*q4, DType::kF32), DType::kQ4_0);
  EXPECT_EQ(parallel::valid_tensor_sizes(q4->config(), DType::kQ4_0), (std::vector<int>{1, 2, 4}));
  // FP8 blocks hold 128 input columns: the 128-wide o_proj / down_proj rows cannot be split at all.
  const auto f8 = open_checkpoint(test::fixture("hf_quant/fp8_block128"));
  EXPECT_EQ(parallel::checkpoint_weight_dtype(*f8, DType::kF32), DType::kF8_B128);
  EXPECT_EQ(parallel::valid_tensor_sizes(f8->config(), DType::kF8_B128), (std::vector<int>{1}));
}

// ---- transcoding on first access ----

// What RankRuntime and `strata plan --check` do with a checkpoint (its config, weight dtype and partition)
// transcodes nothing; the first read of a layer transcodes that layer alone, and later reads while it is held
// reuse it.
TEST(HfQuantLazy, OpeningForThePlanTranscodesNothingAndEachLayerOnce) {
  for (const char* fixture : {"gptq_int4_g32_sym", "ct_w4a16_g64_asym", "fp8_block128"}) {
    const auto ck = open_checkpoint(test::fixture(std::string("hf_quant/") + fixture));
    parallel::PartitionOptions options;
    options.world_size = 2;
    options.default_dtype = parallel::checkpoint_weight_dtype(*ck, DType::kF32);
    const parallel::ParsedPlan plan = parallel::parse_plan("parallel:\n  pipeline: 2\n", "pp2.yaml");
    ASSERT_TRUE(plan.ok()) << parallel::join_diagnostics(plan.diagnostics);
    EXPECT_EQ(parallel::make_partition(plan.plan, ck->config(), options).rank(1).layer_begin, 1);
    EXPECT_EQ(ck->tensors_built(), 0u) << fixture;
    EXPECT_EQ(ck->bytes_built(), 0u) << fixture;
    const TensorEntry& e = ck->entry("blk.1.ffn_down.weight");
    ASSERT_TRUE(e.built_on_access) << fixture;
    EXPECT_FALSE(ck->entry("blk.1.ffn_norm.weight").built_on_access);
    const Tensor rows = ck->tensor_rows(e.name, 2, 3);  // held: the layer stays built (hf_quant_memory_test.cpp)
    EXPECT_EQ(ck->tensors_built(), 1u) << fixture;
    EXPECT_EQ(ck->bytes_built(), e.nbytes) << fixture;
    const std::vector<float> first = dequantized(*ck, e.name);
    EXPECT_EQ(dequantized(*ck, e.name), first);
    EXPECT_EQ(ck->tensors_built(), 1u) << fixture << ": a layer read twice while held was transcoded twice";
    const auto fresh = open_checkpoint(test::fixture(std::string("hf_quant/") + fixture));  // rows alone build it too
    const Tensor fresh_rows = fresh->tensor_rows(e.name, 2, 3);
    EXPECT_EQ(fresh->tensors_built(), 1u);
    EXPECT_EQ(0, std::memcmp(rows.raw(), fresh_rows.raw(), static_cast<size_t>(rows.nbytes()))) << fixture;
  }
}

// ---- the FP8 block type and its CPU dot ----

TEST(F8Block, E4m3ValuesFollowTheFormat) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.f);
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.f);
  EXPECT_EQ(e4m3_to_f32(0xb8), -1.f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  for (int b = 0; b < 0x7f; ++b) EXPECT_EQ(f32_to_e4m3(e4m3_to_f32(static_cast<uint8_t>(b))), b);
}

TEST(F8Block, CpuMatmulMatchesTheDequantizedWeights) {
  const int64_t n = 37, k = 512, m = 3;
  const Tensor wf = test::random_f32({n, k}, 5, 0.05f);
  Tensor w = Tensor::empty({n, k}, DType::kF8_B128);
  quantize_row(DType::kF8_B128, wf.data<float>(), w.raw(), n * k);
  std::vector<float> deq(static_cast<size_t>(n * k));
  dequantize_row(DType::kF8_B128, w.raw(), deq.data(), n * k);
  const Tensor x = test::random_f32({m, k}, 6);
  Tensor out = Tensor::empty({m, n}, DType::kF32);
  make_cpu_backend(1)->matmul(x, w, nullptr, out);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      // Activations round to 8 bits per 32-element block: each moves by at most half a step.
      double ref = 0, bound = 1e-5;
      for (int64_t j = 0; j < k; ++j) {
        const double xj = x.data<float>()[i * k + j], wj = deq[static_cast<size_t>(r * k + j)];
        ref += wj * xj;
        double amax = 0;
        for (int64_t b = j / 32 * 32; b < j / 32 * 32 + 32; ++b) amax = std::max(amax, std::abs(double{x.data<float>()[i * k + b]}));
        bound += std::abs(wj) * amax / 127 / 2 + 1e-6 * std::abs(wj * xj);
      }
      EXPECT_NEAR(out.data<float>()[i * n + r], ref, bound) << "row " << i << " col " << r;
    }
}

// ---- bad input ----

// A copy of a fixture with config.json's quantization_config edited by `edit`.
std::string edited_fixture(const std::string& name, const std::function<void(json::object&)>& edit) {
  const std::string src = test::fixture("hf_quant/" + name);
  const std::string dst = test::temp_dir("hf_quant_" + name);
  fs::remove_all(dst);
  fs::create_directories(dst);
  fs::copy_file(src + "/model.safetensors", dst + "/model.safetensors");
  json::object config = json::parse(read_text(src + "/config.json")).as_object();
  edit(config);
  std::ofstream(dst + "/config.json") << json::serialize(config);
  return dst;
}

void expect_error(const std::string& dir, std::initializer_list<const char*> parts) {
  try {
    open_checkpoint(dir);
    ADD_FAILURE() << dir << " opened";
  } catch (const Error& e) {
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(HfQuantErrors, UnknownMethodOrBitsNameWhatIsSupported) {
  expect_error(edited_fixture("gptq_int4_g32_sym", [](json::object& c) {
                 c["quantization_config"].as_object()["quant_method"] = "bitsandbytes";
               }),
               {"quant_method 'bitsandbytes' is not supported", "gptq (4 or 8 bits)"});
  expect_error(edited_fixture("gptq_int4_g32_sym", [](json::object& c) { c["quantization_config"].as_object()["bits"] = 3; }),
               {"bits = 3", "4- and 8-bit GPTQ"});
  expect_error(edited_fixture("awq_int4_g64", [](json::object& c) { c["quantization_config"].as_object()["version"] = "gemv"; }),
               {"'gemv' is not supported", "GEMM"});
}

TEST(HfQuantErrors, GroupSizeThatDoesNotDivideOrDisagreesWithTheScales) {
  expect_error(edited_fixture("gptq_int4_g32_sym", [](json::object& c) { c["quantization_config"].as_object()["group_size"] = 48; }),
               {"group_size 48", "does not divide its 128 input columns"});
  expect_error(edited_fixture("gptq_int4_g32_sym", [](json::object& c) { c["quantization_config"].as_object()["group_size"] = 64; }),
               {".scales' in model.safetensors has shape [4, 128] but GPTQ with group_size 64 needs [2, 128]"});
}

TEST(HfQuantErrors, FloatEightWeightsWithoutAQuantizationConfig) {
  expect_error(edited_fixture("fp8_block128", [](json::object& c) { c.erase("quantization_config"); }),
               {"is f8_e4m3", "no quantization_config"});
}

// A scale of a layer's content (not its header) that its block type cannot hold: the checkpoint opens, the
// other layers read, and that layer's first read (and every later one) names the tensor.
TEST(HfQuantErrors, ContentErrorsSurfaceAtTheLayersFirstRead) {
  const std::string dir = edited_fixture("gptq_int4_g32_sym", [](json::object&) {});
  {
    std::fstream f(dir + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const MappedFile file(dir + "/model.safetensors");
    const SafetensorsHeader header = parse_safetensors_header(file.data(), file.size(), dir);
    uint64_t offset = 0;
    for (const SafetensorsTensor& t : header.tensors)
      if (t.name == "model.layers.1.mlp.down_proj.scales") offset = t.offset;
    ASSERT_GT(offset, 0u);
    const uint16_t inf = 0x7c00;  // f16 +inf, the scale of group 0, output row 0
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(&inf), 2);
  }
  const auto ck = open_checkpoint(dir);
  EXPECT_NO_THROW(ck->tensor("blk.1.ffn_up.weight"));
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      ck->tensor("blk.1.ffn_down.weight");
      ADD_FAILURE() << "a layer with an infinite scale transcoded";
    } catch (const Error& e) {
      const std::string want =
          "'model.layers.1.mlp.down_proj.scales' in model.safetensors: scale 0, group 0 is inf; a quantized layer "
          "needs finite scales";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(ck->tensors_built(), 1u);
  struct stat st {};  // the failed build's pages were handed back, and blk.1.ffn_up's once its view went
  ASSERT_EQ(::stat(ck->entry("blk.1.ffn_down.weight").file.c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0);
}

// A shard truncated after open: the first read of a layer not yet transcoded errors instead of faulting.
TEST(HfQuantErrors, ShardTruncatedBeforeTheFirstReadIsAnError) {
  const std::string dir = edited_fixture("ct_w4a16_g32", [](json::object&) {});
  const auto ck = open_checkpoint(dir);
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  try {
    ck->tensor("blk.1.ffn_down.weight");
    ADD_FAILURE() << "read a layer of a truncated shard";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("model.safetensors' changed size while mapped"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(ck->tensors_built(), 0u);
}

// Direct transcoder inputs for the classes a fixture cannot show without rewriting safetensors.
struct Raw {
  std::map<std::string, HfRawTensor> tensors;
  std::vector<std::vector<uint8_t>> keep;
  void add(const std::string& name, DType dt, Shape shape, std::vector<uint8_t> bytes) {
    keep.push_back(std::move(bytes));
    tensors[name] = HfRawTensor{"/x/model.safetensors", dt, std::move(shape), keep.back().data(), keep.back().size()};
  }
};

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

void expect_transcode_error(const HfQuantization& q, Raw& raw, std::initializer_list<const char*> parts) {
  try {
    transcode_hf_quantized(q, raw.tensors);
    ADD_FAILURE() << "transcoded";
  } catch (const Error& e) {
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(HfQuantErrors, GIdxOutOfRangeNamesTheTensor) {
  const HfQuantization q = parse_hf_quantization(R"({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": true})", "cfg");
  Raw raw;
  raw.add("l.qweight", DType::kI32, {8, 8}, bytes_of(std::vector<int32_t>(64, 0x76543210)));
  raw.add("l.qzeros", DType::kI32, {2, 1}, bytes_of(std::vector<int32_t>(2, 0x77777777)));
  raw.add("l.scales", DType::kF16, {2, 8}, bytes_of(std::vector<uint16_t>(16, 0x3c00)));
  std::vector<int32_t> g(64, 0);
  g[40] = 2;  // two groups: 2 is out of range
  raw.add("l.g_idx", DType::kI32, {64}, bytes_of(g));
  expect_transcode_error(q, raw, {"'l.g_idx' in model.safetensors", "entry 40 = 2 is outside the 2 groups"});
}

TEST(HfQuantErrors, MissingScalesAndFp8RowsNotAMultipleOf128) {
  const HfQuantization gptq = parse_hf_quantization(R"({"quant_method": "gptq", "bits": 4, "group_size": -1})", "cfg");
  Raw a;
  a.add("l.qweight", DType::kI32, {8, 8}, bytes_of(std::vector<int32_t>(64, 0)));
  expect_transcode_error(gptq, a, {"quantized layer 'l' has no tensor 'l.scales'"});
  const HfQuantization fp8 = parse_hf_quantization(R"({"quant_method": "fp8", "weight_block_size": [128, 128]})", "cfg");
  Raw b;
  b.add("l.weight", DType::kF8_E4M3, {4, 96}, std::vector<uint8_t>(4 * 96, 0x38));
  b.add("l.weight_scale_inv", DType::kF32, {1, 1}, bytes_of(std::vector<float>{1.f}));
  expect_transcode_error(fp8, b, {"'l.weight' in model.safetensors has 96 input columns", "multiple of 128"});
  // Per-channel scales (as `strata quantize --type fp8` writes them) on such rows are dequantized exactly to f32.
  Raw c;
  c.add("l.weight", DType::kF8_E4M3, {2, 96}, std::vector<uint8_t>(2 * 96, 0x38));  // e4m3 0x38 = 1.0
  c.add("l.weight_scale", DType::kF32, {2, 1}, bytes_of(std::vector<float>{0.5f, 0.25f}));
  const auto out = transcode_hf_quantized(fp8, c.tensors);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].dtype, DType::kF32);
  const auto* y = reinterpret_cast<const float*>(out[0].bytes.data());
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[96 + 95], 0.25f);
}

TEST(HfQuantErrors, CompressedTensorsScalesOfTheWrongShape) {
  const HfQuantization q = parse_hf_quantization(
      R"({"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"group_0":
          {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}})", "cfg");
  Raw raw;
  raw.add("l.weight", DType::kI8, {4, 64}, std::vector<uint8_t>(256, 1));
  raw.add("l.weight_scale", DType::kF32, {3, 1}, bytes_of(std::vector<float>(3, 0.5f)));
  expect_transcode_error(q, raw, {"'l.weight_scale' in model.safetensors has shape [3, 1]"});
}

// An int8 W8A8 scale that is not an f16 value keeps its exact value as an f32 layer.
TEST(HfQuant, ScalesThatAreNotF16ValuesFallBackToExactF32) {
  const HfQuantization q = parse_hf_quantization(
      R"({"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"group_0":
          {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}})", "cfg");
  Raw raw;
  std::vector<int8_t> w(2 * 32);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(static_cast<int>(i) * 7 % 255 - 127);
  raw.add("l.weight", DType::kI8, {2, 32}, bytes_of(w));
  const std::vector<float> s = {0.1f, 0.25f};  // 0.1 is no f16 value
  raw.add("l.weight_scale", DType::kF32, {2, 1}, bytes_of(s));
  const std::vector<HfTranscoded> out = transcode_hf_quantized(q, raw.tensors);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].dtype, DType::kF32);
  EXPECT_TRUE(raw.tensors.empty());
  const auto* y = reinterpret_cast<const float*>(out[0].bytes.data());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(y[i], s[i / 32] * static_cast<float>(w[i])) << i;
}

}  // namespace
}  // namespace strata
