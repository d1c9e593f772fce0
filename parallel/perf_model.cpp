// parallel/perf_model.cpp: the step-time model (counts / ceilings), plan suggestion, and the parsers of
// hardware and sweep files. Those two files are YAML like plans, so they are read here in parallel/
// next to plan_parser.cpp, and nothing below parallel/ sees YAML.
#include "parallel/perf_model.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "parallel/byte_size.h"
#include "parallel/plan_check.h"
#include "runtime/error.h"
#include "runtime/collective.h"
#include "runtime/kv_cache.h"

namespace strata::parallel {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Weights of `matmul` matrix elements and `small` norm/bias elements: quantized dtypes keep norms and
// biases in f32 (as GGUF does), so only the matrices shrink.
int64_t weight_bytes(DType dtype, int64_t matmul, int64_t small) {
  if (!dtype_is_quantized(dtype)) return dtype_bytes(dtype, matmul + small);
  const int64_t block = dtype_block_elems(dtype);  // a count, not one row: round up to whole blocks
  return (matmul + block - 1) / block * dtype_block_bytes(dtype) + 4 * small;
}

int64_t kv_heads_local(const ModelConfig& c, int tp) { return tp <= c.n_kv_heads ? c.n_kv_heads / tp : 1; }

// Bytes of one token's K (or V) row of one KV head in the cache: its dtype's (fp8 rows carry a scale),
// else the activation's.
int64_t kv_head_row_bytes(const ModelConfig& c, const PlanShape& s, const Hardware& hw) {
  return s.kv_cache_dtype ? kv_row_bytes(*s.kv_cache_dtype, c.head_dim) : c.head_dim * hw.activation_bytes;
}

int64_t small_params(const ModelConfig& c, int tp) {  // norms and biases of one layer on one rank
  const int64_t bias = c.qkv_bias ? (c.n_heads / tp + 2 * kv_heads_local(c, tp)) * c.head_dim : 0;
  return 2 * c.hidden + bias + (c.qk_norm ? 2 * c.head_dim : 0);
}

std::vector<int64_t> stage_sizes(const ModelConfig& c, const PlanShape& s) {
  if (!s.stage_layers.empty()) return s.stage_layers;
  return balanced_stage_layers(c, s.pp);  // the split a plan without explicit stages gets
}

// Whether any message between world ranks a + j and b + j (j < lanes) leaves a node.
bool crosses(int a, int b, int lanes, int per_node) {
  for (int j = 0; j < lanes; ++j)
    if ((a + j) / per_node != (b + j) / per_node) return true;
  return false;
}

struct Slot {  // one micro-batch on one stage
  double compute = 0, mem = 0, flop = 0, stream = 0, ar = 0, ar_exposed = 0, send = 0;
  bool stream_disk = false;
  double total() const { return std::max(compute, stream) + ar_exposed + send; }
};

// One stage's slot for `tokens` new tokens of `seqs` sequences whose attention spans `ctx` positions
// each (decode: tokens == seqs; prefill: tokens == seqs x prompt).
Slot stage_slot(const ModelConfig& c, const PlanShape& s, const Hardware& hw, int64_t layers, bool first, bool last,
                int64_t tokens, int64_t seqs, double ctx, bool prefill) {
  Slot slot;
  const int tp = s.tp;
  const int64_t head = last ? head_params(c, tp) : 0;
  const StageMatmuls mm = stage_matmuls(c, s, layers, tokens);
  const double w = static_cast<double>(weight_bytes(s.dtype, std::llround(mm.read) + head,
                                                    layers * small_params(c, tp) + (last ? c.hidden : 0)));
  const double kv_row = 2.0 * static_cast<double>(kv_heads_local(c, tp) * kv_head_row_bytes(c, s, hw));
  const double kv = static_cast<double>(layers) * kv_row * static_cast<double>(seqs) * ctx;
  // Attention: QK^T and PV, 2 FLOPs per multiply-add; a prefill's causal mask halves the square.
  const double attn_positions = prefill ? ctx * ctx / 2 : ctx;
  const double flops = 2.0 * static_cast<double>(tokens) * (mm.per_token + static_cast<double>(head)) +
                       4.0 * static_cast<double>(layers * (c.n_heads / tp) * c.head_dim) * attn_positions *
                           static_cast<double>(seqs);
  slot.mem = hw.mem_gbs > 0 ? (w + kv) / (hw.mem_gbs * 1e9 * hw.mem_efficiency) : 0;
  const double gemm_share = prefill && hw.prefill_gemm_efficiency > 0 ? hw.prefill_gemm_efficiency : hw.gemm_efficiency;
  slot.flop = hw.gemm_tflops > 0 ? flops / (hw.gemm_tflops * 1e12 * gemm_share) : 0;
  slot.compute = std::max(slot.mem, slot.flop);
  // Streamed layers cross the host link (disk ones the disk first) while compute runs.
  const double streamed = static_cast<double>(s.host_stream_bytes + s.disk_stream_bytes) *
                          (static_cast<double>(layers) / static_cast<double>(c.n_layers) * s.pp);
  const double t_link = hw.h2d_gbs > 0 ? streamed / (hw.h2d_gbs * 1e9) : 0;
  const double t_disk = hw.disk_gbs > 0 && s.disk_stream_bytes > 0
                            ? static_cast<double>(s.disk_stream_bytes) / (hw.disk_gbs * 1e9) : 0;
  slot.stream = std::max(t_link, t_disk);
  slot.stream_disk = t_disk > t_link;
  // Mixture-of-experts layers combine their experts' outputs over the stage's tp x ep ranks.
  const int group = tp * std::max(1, s.ep);
  if (tp > 1 || (mm.sparse_layers > 0 && group > 1)) {
    const Link& link = tp_crosses_nodes(tp, hw) ? hw.inter : hw.intra;
    const Link& group_link = tp_crosses_nodes(group, hw) ? hw.inter : hw.intra;
    const int64_t act = tokens * c.hidden * hw.activation_bytes;
    // Attention output and MLP down over tp; a MoE layer's expert combine over the tp x ep group.
    const double dense_layer = 2 * allreduce_seconds(act, tp, link);
    const double sparse_layer = allreduce_seconds(act, tp, link) + allreduce_seconds(act, group, group_link);
    const double layer_ar = static_cast<double>(layers - mm.sparse_layers) * dense_layer +
                            static_cast<double>(mm.sparse_layers) * sparse_layer;
    slot.ar = layer_ar + (first ? allreduce_seconds(act, tp, link) : 0) +  // vocab-parallel embedding
              (last ? allgather_seconds(tokens * ceil_div(c.vocab_size, tp) * tp * 4, tp, link) : 0);
    // The layer all-reduces are split into pieces of at least overlap_min_tokens tokens, up to
    // overlap_chunks, that overlap the o-projection and MLP (or experts) of the next piece
    // (overlap_row_groups); the embedding and head ones never overlap.
    const int64_t chunks = overlap_row_groups(tokens, s.overlap_chunks, s.overlap_min_tokens);
    const double overlappable = mm.per_token > 0 ? slot.compute * mm.after_attention / mm.per_token : 0;
    const double k = static_cast<double>(chunks);
    const double exposed_layers =
        chunks <= 1 ? layer_ar : std::max(layer_ar / k, layer_ar - overlappable * (k - 1) / k);
    slot.ar_exposed = exposed_layers + (slot.ar - layer_ar);
  }
  return slot;
}

// One step of a replica: `seqs` sequences, `tokens` new tokens, split into micro-batches.
StepTime step_time(const ModelConfig& c, const PlanShape& s, const Hardware& hw, int64_t tokens, int64_t seqs,
                   double ctx, bool prefill) {
  StepTime t;
  if (seqs <= 0 || tokens <= 0) return t;
  const int64_t m = std::max<int64_t>(1, std::min<int64_t>(s.interleaved ? s.pp : s.micro_batches, seqs));
  const int64_t mb_seqs = ceil_div(seqs, m), mb_tokens = ceil_div(tokens, m);
  const std::vector<int64_t> sizes = stage_sizes(c, s);
  const int per_node = std::max(1, hw.devices_per_node);
  // The pipeline moves at the pace of its slowest stage, and every slot also hands a micro-batch's
  // activations to the next stage: the slot is the slowest stage plus the slowest hop.
  Slot worst;
  double send = 0;
  for (int st = 0; st < s.pp; ++st) {
    const Slot slot = stage_slot(c, s, hw, sizes[static_cast<size_t>(st)], st == 0, st == s.pp - 1, mb_tokens,
                                 mb_seqs, ctx, prefill);
    if (st + 1 < s.pp) {
      bool inter = false;
      for (int d = 0; d < s.dp && !inter; ++d)
        inter = crosses((d * s.pp + st) * s.tp, (d * s.pp + st + 1) * s.tp, s.tp, per_node);
      send = std::max(send, p2p_seconds(mb_tokens * c.hidden * hw.activation_bytes, inter ? hw.inter : hw.intra));
    }
    if (slot.total() > worst.total()) worst = slot;
  }
  worst.send = send;
  const double md = static_cast<double>(m);
  t.compute_s = md * worst.compute;
  t.allreduce_s = md * worst.ar;
  t.allreduce_exposed_s = md * worst.ar_exposed;
  t.p2p_s = md * worst.send;
  t.stream_s = md * std::max(0.0, worst.stream - worst.compute);
  // Steps: every step fills and drains the pipeline. Interleaved: other groups fill it meanwhile.
  t.bubble_s = s.interleaved ? 0.0 : static_cast<double>(s.pp - 1) * worst.total();
  t.overhead_s = hw.step_overhead_us * 1e-6;
  t.total_s = t.compute_s + t.allreduce_exposed_s + t.p2p_s + t.stream_s + t.bubble_s + t.overhead_s;
  const double comm = t.allreduce_exposed_s + t.p2p_s;
  if (worst.stream > worst.compute && t.stream_s >= comm) t.bound = worst.stream_disk ? "disk" : "host link";
  else if (comm > t.compute_s) t.bound = "communication";
  else t.bound = worst.flop > worst.mem ? "compute" : "memory";
  return t;
}

}  // namespace

std::string PlanShape::str() const { return cat("tp", tp, " pp", pp, " dp", dp, ep > 1 ? cat(" ep", ep) : ""); }

double allreduce_seconds(int64_t bytes, int ranks, const Link& link) {
  if (ranks <= 1 || bytes <= 0) return 0;
  const double p = ranks, b = static_cast<double>(bytes), bw = link.gbs * 1e9, a = link.latency_us * 1e-6;
  const double ring = 2 * (p - 1) / p * b / bw + 2 * (p - 1) * a;
  const double tree = 2 * std::ceil(std::log2(p)) * a + 2 * b / bw;
  return std::min(ring, tree);
}

double allgather_seconds(int64_t bytes, int ranks, const Link& link) {
  if (ranks <= 1 || bytes <= 0) return 0;
  const double p = ranks;
  return (p - 1) / p * static_cast<double>(bytes) / (link.gbs * 1e9) + (p - 1) * link.latency_us * 1e-6;
}

double p2p_seconds(int64_t bytes, const Link& link) {
  return bytes <= 0 ? 0 : static_cast<double>(bytes) / (link.gbs * 1e9) + link.latency_us * 1e-6;
}

double bubble_fraction(int pp, int micro_batches) {
  return pp <= 1 ? 0 : static_cast<double>(pp - 1) / static_cast<double>(micro_batches + pp - 1);
}

int64_t layer_params(const ModelConfig& c, int tp) {
  const int64_t q = c.n_heads / tp * c.head_dim, kv = kv_heads_local(c, tp) * c.head_dim;
  return c.hidden * q * 2 + c.hidden * kv * 2 + 3 * c.hidden * (c.ffn / tp) + small_params(c, tp);
}

StageMatmuls stage_matmuls(const ModelConfig& c, const PlanShape& s, int64_t layers, int64_t tokens) {
  StageMatmuls m;
  const int tp = s.tp;
  const int64_t q = c.n_heads / tp * c.head_dim, kv = kv_heads_local(c, tp) * c.head_dim;
  const double attention = static_cast<double>(c.hidden * q * 2 + c.hidden * kv * 2);
  const double o_proj = static_cast<double>(c.hidden * q);
  if (c.moe.enabled() && c.n_layers > 0) {
    int64_t in_model = 0;
    for (int64_t l = 0; l < c.n_layers; ++l) in_model += c.moe.sparse_layer(l) ? 1 : 0;
    m.sparse_layers = (layers * in_model + c.n_layers / 2) / c.n_layers;  // the stage's share, rounded
  }
  const auto dense = static_cast<double>(layers - m.sparse_layers);
  const double mlp = 3.0 * static_cast<double>(c.hidden * (c.ffn / tp));
  m.held = m.read = m.per_token = dense * (attention + mlp);
  m.after_attention = dense * (o_proj + mlp);
  if (m.sparse_layers > 0) {
    const auto sparse = static_cast<double>(m.sparse_layers);
    const int64_t group = int64_t{tp} * std::max(1, s.ep);
    const double experts = static_cast<double>(c.moe.n_experts), used = static_cast<double>(c.moe.n_used);
    const double expert = 3.0 * static_cast<double>(c.hidden * c.moe.expert_ffn);
    const double held_experts = static_cast<double>(c.moe.n_experts / group);
    // The shared expert's columns and its sigmoid gate (one row), the router (replicated).
    const double shared = c.moe.shared_ffn > 0 ? 3.0 * static_cast<double>(c.hidden * (c.moe.shared_ffn / group)) +
                                                     static_cast<double>(c.hidden)
                                               : 0;
    const double always = attention + experts * static_cast<double>(c.hidden) + shared;
    const double hit = 1 - std::pow(1 - used / experts, static_cast<double>(std::max<int64_t>(tokens, 1)));
    const double routed = used / static_cast<double>(group) * expert;  // per token, on this rank
    m.held += sparse * (always + held_experts * expert);
    m.read += sparse * (always + held_experts * hit * expert);
    m.per_token += sparse * (always + routed);
    m.after_attention += sparse * (o_proj + shared + routed);
  }
  return m;
}

int64_t head_params(const ModelConfig& c, int tp) { return ceil_div(c.vocab_size, tp) * c.hidden; }

bool tp_crosses_nodes(int tp, const Hardware& hw) {
  const int per_node = std::max(1, hw.devices_per_node);
  return tp > per_node || per_node % tp != 0;
}

PlanShape plan_shape(const Plan& plan, const Partition& partition) {
  PlanShape s;
  s.tp = plan.parallel.tensor, s.pp = plan.parallel.pipeline, s.dp = plan.parallel.data, s.ep = plan.parallel.expert;
  s.micro_batches = plan.micro_batches();
  s.interleaved = plan.parallel.interleaved;
  s.overlap_chunks = plan.comm.overlap_chunks;
  s.overlap_min_tokens = plan.comm.overlap_min_tokens;
  s.dtype = partition.dtype;
  s.kv_cache_dtype = plan.serve.kv_cache_dtype;
  for (const Stage& st : partition.stages) s.stage_layers.push_back(st.size());
  for (const RankPartition& r : partition.ranks) {
    // Cached experts stream per token only what its routed experts miss: at most expert_fetch_bytes.
    const bool from_disk = r.expert_tier == Tier::kDisk;
    const int64_t cold_experts = r.expert_slots > 0 ? r.expert_streamed_bytes - r.expert_fetch_bytes : 0;
    s.host_stream_bytes = std::max(s.host_stream_bytes, r.bytes.host - (from_disk ? 0 : cold_experts));
    s.disk_stream_bytes = std::max(s.disk_stream_bytes, r.bytes.disk - (from_disk ? cold_experts : 0));
  }
  return s;
}

Prediction predict(const ModelConfig& c, const PlanShape& s, const Hardware& hw, const Workload& w) {
  STRATA_CHECK(s.tp >= 1 && s.pp >= 1 && s.dp >= 1 && s.ep >= 1 && s.pp <= c.n_layers, "plan sizes ", s.str(),
               " do not fit a model of ", c.n_layers, " layers");
  Prediction p;
  const int64_t seqs = ceil_div(w.batch, s.dp);  // the busiest replica
  const double ctx = static_cast<double>(w.prompt_len) + static_cast<double>(w.output_len) / 2;
  p.decode = step_time(c, s, hw, seqs, seqs, ctx, false);
  p.decode_tokens_per_s = p.decode.total_s > 0 ? static_cast<double>(w.batch) / p.decode.total_s : 0;
  // Prefill in chunks of max_step_tokens whole prompts (at least one prompt per step).
  const int64_t per_step = std::max<int64_t>(1, std::min<int64_t>(seqs, hw.max_step_tokens / std::max<int64_t>(1, w.prompt_len)));
  p.prefill = step_time(c, s, hw, per_step * w.prompt_len, per_step, static_cast<double>(w.prompt_len), true);
  const double prefill_total = p.prefill.total_s * static_cast<double>(ceil_div(seqs, per_step));
  p.ttft_s = prefill_total;
  p.prefill_tokens_per_s = prefill_total > 0 ? static_cast<double>(w.batch * w.prompt_len) / prefill_total : 0;
  // Memory of the largest rank: the biggest stage (stage 0 holds the embedding, the last the head).
  const std::vector<int64_t> sizes = stage_sizes(c, s);
  for (int st = 0; st < s.pp; ++st) {
    const int64_t layers = sizes[static_cast<size_t>(st)];
    const bool first = st == 0, last = st == s.pp - 1;
    // Stage 0 holds the embedding, the last stage the head: one tensor when tied on a single stage.
    const int64_t globals = ((first ? 1 : 0) + (last && !(c.tied_embeddings && first) ? 1 : 0)) * head_params(c, s.tp);
    const int64_t bytes = weight_bytes(s.dtype, std::llround(stage_matmuls(c, s, layers, 1).held) + globals,
                                       layers * small_params(c, s.tp) + (last ? c.hidden : 0));
    const int64_t kv = 2 * layers * kv_heads_local(c, s.tp) * kv_head_row_bytes(c, s, hw) * seqs *
                       (w.prompt_len + w.output_len);
    const int64_t device = bytes - s.host_stream_bytes - s.disk_stream_bytes + kv;
    p.weight_bytes_per_rank = std::max(p.weight_bytes_per_rank, bytes);
    if (device > p.device_bytes_per_rank) p.device_bytes_per_rank = device, p.kv_bytes_per_rank = kv;
  }
  p.fits = hw.memory_bytes <= 0 || p.device_bytes_per_rank <= hw.memory_bytes;
  p.nodes = static_cast<int>(ceil_div(s.world(), std::max(1, hw.devices_per_node)));
  return p;
}

SuggestResult suggest_plans(const ModelConfig& config, const Hardware& hw, int gpus, const Workload& work,
                            Objective objective, DType dtype) {
  SuggestResult out;
  // Every split of the GPUs into ep x tp x pp x dp; ep > 1 (a stage's experts spread over its tp x ep ranks)
  // only for mixture-of-experts models.
  struct Split {
    int ep, tp, pp;
  };
  std::vector<Split> splits;
  for (int ep = 1; ep <= (config.moe.enabled() ? gpus : 1); ++ep)
    for (int tp = 1; ep * tp <= gpus; ++tp)
      for (int pp = 1; ep * tp * pp <= gpus && pp <= config.n_layers; ++pp)
        if (gpus % (ep * tp * pp) == 0) splits.push_back({ep, tp, pp});
  for (const Split& split : splits) {
    const int ep = split.ep, tp = split.tp, pp = split.pp;
    const int dp = gpus / ep / tp / pp;
    Plan plan;
    plan.source = cat("<suggest tp", tp, " pp", pp, " dp", dp, " ep", ep, ">");
    plan.model.dtype = dtype;
    plan.parallel.tensor = tp, plan.parallel.pipeline = pp, plan.parallel.data = dp, plan.parallel.expert = ep;
    PlanShape shape;
    shape.tp = tp, shape.pp = pp, shape.dp = dp, shape.ep = ep;
    shape.micro_batches = plan.micro_batches();
    shape.overlap_chunks = plan.comm.overlap_chunks;
    shape.overlap_min_tokens = plan.comm.overlap_min_tokens;
    shape.dtype = dtype;
    // validate_plan owns the rules (heads, KV heads, ffn, quantized blocks, stages); TP sizes that
    // valid_tensor_sizes already rules out are skipped without partitioning.
    const std::vector<int> valid = valid_tensor_sizes(config, dtype);
    if (std::find(valid.begin(), valid.end(), tp) == valid.end()) {
      if (pp == 1 && ep == 1) out.rejected.push_back(cat("tp", tp, ": does not divide the heads / ffn of the model"));
      continue;
    }
    // The rules do not depend on the replicas, so one replica is validated (tp x pp x ep ranks, not 1024).
    plan.parallel.data = 1;
    const std::vector<Diagnostic> diags = validate_plan(plan, config, tp * pp * ep);
    plan.parallel.data = dp;
    const auto error = std::find_if(diags.begin(), diags.end(), [](const Diagnostic& x) { return x.severity == Severity::kError; });
    if (error != diags.end()) {
      out.rejected.push_back(cat(shape.str(), ": ", error->message));
      continue;
    }
    const Prediction p = predict(config, shape, hw, work);
    if (!p.fits) {
      out.rejected.push_back(cat(shape.str(), ": needs ", format_bytes(p.device_bytes_per_rank), " per device (",
                                 format_bytes(p.kv_bytes_per_rank), " KV), the device has ",
                                 format_bytes(hw.memory_bytes)));
      continue;
    }
    const StepTime& d = p.decode;
    char line[256];
    std::snprintf(line, sizeof line, "%s-bound; compute %.2f ms, all-reduce %.2f ms (%.0f%% hidden), p2p %.2f ms, "
                  "bubble %.2f ms%s; %d node%s",
                  d.bound.c_str(), d.compute_s * 1e3, d.allreduce_s * 1e3, 100 * d.hidden_fraction(), d.p2p_s * 1e3,
                  d.bubble_s * 1e3, tp_crosses_nodes(tp, hw) ? "; TP crosses nodes" : "", p.nodes,
                  p.nodes > 1 ? "s" : "");
    out.ranked.push_back({shape, p, line});
  }
  std::stable_sort(out.ranked.begin(), out.ranked.end(), [&](const Suggestion& a, const Suggestion& b) {
    if (objective == Objective::kLatency) return a.prediction.decode.total_s < b.prediction.decode.total_s;
    return a.prediction.decode_tokens_per_s > b.prediction.decode_tokens_per_s;
  });
  return out;
}

// ---- hardware and sweep files ----
namespace {

class YamlReader {
 public:
  explicit YamlReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& what) const {
    const YAML::Mark m = node.Mark();
    STRATA_THROW(ErrorKind::kConfig, source_, ":", m.is_null() ? 1 : m.line + 1, ":", m.is_null() ? 1 : m.column + 1,
                 ": ", what);
  }
  // Every key of `map` must be one of `keys` (typos are the usual mistake in hand-written files).
  void keys(const YAML::Node& map, const std::string& where, const std::set<std::string>& keys) const {
    if (!map.IsMap()) fail(map, cat(where.empty() ? "the file" : where, " must be a map"));
    for (const auto& kv : map) {
      const std::string k = kv.first.as<std::string>();
      if (keys.count(k) == 0) {
        std::string known;
        for (const auto& x : keys) known += (known.empty() ? "" : ", ") + x;
        fail(kv.first, cat("unknown key '", k, "'", where.empty() ? "" : " in " + where, "; expected one of ", known));
      }
    }
  }
  double number(const YAML::Node& n, const std::string& field, double min) const {
    try {
      const double v = n.as<double>();
      if (!(v >= min)) fail(n, cat(field, " must be at least ", min, ", got ", v));
      return v;
    } catch (const YAML::Exception&) {
      fail(n, cat(field, " must be a number, got '", n.Scalar(), "'"));
    }
  }
  int64_t integer(const YAML::Node& n, const std::string& field, int64_t min) const {
    const double v = number(n, field, static_cast<double>(min));
    if (v != std::floor(v)) fail(n, cat(field, " must be an integer, got ", v));
    return static_cast<int64_t>(v);
  }
  std::string str(const YAML::Node& n, const std::string& field) const {
    if (!n.IsScalar()) fail(n, cat(field, " must be a string"));
    return n.Scalar();
  }
  std::vector<int64_t> integers(const YAML::Node& n, const std::string& field) const {
    std::vector<int64_t> out;
    if (n.IsScalar()) return {integer(n, field, 1)};
    if (!n.IsSequence() || n.size() == 0) fail(n, cat(field, " must be a number or a non-empty list of numbers"));
    for (const auto& x : n) out.push_back(integer(x, field, 1));
    return out;
  }
  Link link(const YAML::Node& n, const std::string& field) const {
    keys(n, field, {"gbs", "latency_us"});
    Link l;
    if (n["gbs"]) l.gbs = number(n["gbs"], field + ".gbs", 1e-6);
    if (n["latency_us"]) l.latency_us = number(n["latency_us"], field + ".latency_us", 0);
    return l;
  }

 private:
  std::string source_;
};

YAML::Node load(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    STRATA_THROW(ErrorKind::kConfig, source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
}

}  // namespace

Hardware parse_hardware(const std::string& text, const std::string& source) {
  const YamlReader r(source);
  const YAML::Node root = load(text, source);
  r.keys(root, "", {"name", "device", "node", "cluster", "host", "calibration", "notes"});
  Hardware hw;
  hw.source = source;
  if (root["name"]) hw.name = r.str(root["name"], "name");
  const YAML::Node dev = root["device"];
  if (!dev) r.fail(root, "a hardware file needs a device section (memory_gbs, gemm_tflops, memory)");
  r.keys(dev, "device", {"kind", "memory", "memory_gbs", "gemm_tflops", "activation_bytes"});
  if (!dev["memory_gbs"] || !dev["gemm_tflops"]) r.fail(dev, "device needs memory_gbs and gemm_tflops");
  hw.mem_gbs = r.number(dev["memory_gbs"], "device.memory_gbs", 1e-6);
  hw.gemm_tflops = r.number(dev["gemm_tflops"], "device.gemm_tflops", 1e-9);
  if (dev["memory"]) {
    const auto bytes = parse_byte_size(r.str(dev["memory"], "device.memory"));
    if (!bytes) r.fail(dev["memory"], "device.memory must be a size such as 80GiB");
    hw.memory_bytes = *bytes;
  }
  if (dev["activation_bytes"]) hw.activation_bytes = static_cast<int>(r.integer(dev["activation_bytes"], "device.activation_bytes", 1));
  if (const YAML::Node n = root["node"]) {
    r.keys(n, "node", {"devices", "link"});
    if (n["devices"]) hw.devices_per_node = static_cast<int>(r.integer(n["devices"], "node.devices", 1));
    if (n["link"]) hw.intra = r.link(n["link"], "node.link");
  }
  hw.inter = hw.intra;
  if (const YAML::Node n = root["cluster"]) {
    r.keys(n, "cluster", {"nodes", "link"});
    if (n["nodes"]) hw.nodes = static_cast<int>(r.integer(n["nodes"], "cluster.nodes", 1));
    if (n["link"]) hw.inter = r.link(n["link"], "cluster.link");
  }
  if (hw.intra.gbs <= 0 && hw.world() > 1) r.fail(root, "node.link.gbs is needed when a node has several devices");
  if (hw.nodes > 1 && hw.inter.gbs <= 0) r.fail(root, "cluster.link.gbs is needed for more than one node");
  if (const YAML::Node n = root["host"]) {
    r.keys(n, "host", {"h2d_gbs", "disk_gbs"});
    if (n["h2d_gbs"]) hw.h2d_gbs = r.number(n["h2d_gbs"], "host.h2d_gbs", 0);
    if (n["disk_gbs"]) hw.disk_gbs = r.number(n["disk_gbs"], "host.disk_gbs", 0);
  }
  if (const YAML::Node n = root["calibration"]) {
    r.keys(n, "calibration", {"memory_efficiency", "gemm_efficiency", "prefill_gemm_efficiency", "step_overhead_us",
                              "fitted_from"});
    if (n["prefill_gemm_efficiency"])
      hw.prefill_gemm_efficiency = r.number(n["prefill_gemm_efficiency"], "calibration.prefill_gemm_efficiency", 1e-6);
    if (n["memory_efficiency"]) hw.mem_efficiency = r.number(n["memory_efficiency"], "calibration.memory_efficiency", 1e-6);
    if (n["gemm_efficiency"]) hw.gemm_efficiency = r.number(n["gemm_efficiency"], "calibration.gemm_efficiency", 1e-6);
    if (n["step_overhead_us"]) hw.step_overhead_us = r.number(n["step_overhead_us"], "calibration.step_overhead_us", 0);
  }
  return hw;
}

SweepSpec parse_sweep(const std::string& text, const std::string& source) {
  const YamlReader r(source);
  const YAML::Node root = load(text, source);
  r.keys(root, "", {"name", "model", "hardware", "launcher", "device", "plans", "batch", "prompt_len", "output_len",
                    "weak_scaling", "timeout_s", "notes"});
  SweepSpec s;
  s.source = source;
  if (root["name"]) s.name = r.str(root["name"], "name");
  const YAML::Node model = root["model"];
  if (!model) r.fail(root, "a sweep needs model: {path: CHECKPOINT} or model: {preset: tiny}");
  r.keys(model, "model", {"path", "preset", "dtype"});
  if (model["path"]) s.model_path = r.str(model["path"], "model.path");
  if (model["preset"]) s.model_preset = r.str(model["preset"], "model.preset");
  if (model["dtype"]) s.model_dtype = r.str(model["dtype"], "model.dtype");
  if (s.model_path.empty() == s.model_preset.empty()) r.fail(model, "give exactly one of model.path and model.preset");
  if (root["hardware"]) s.hardware = r.str(root["hardware"], "hardware");
  if (root["launcher"]) s.launcher = r.str(root["launcher"], "launcher");
  if (s.launcher != "mpirun" && s.launcher != "srun" && s.launcher != "none")
    r.fail(root["launcher"], cat("launcher must be mpirun, srun or none, got '", s.launcher, "'"));
  if (root["device"]) s.device = r.str(root["device"], "device");
  const YAML::Node plans = root["plans"];
  if (!plans || !plans.IsSequence() || plans.size() == 0) r.fail(root, "a sweep needs a non-empty list of plans");
  std::set<std::string> names;
  for (const auto& p : plans) {
    r.keys(p, "plans[]",
           {"name", "file", "tensor", "pipeline", "data", "micro_batches", "overlap_chunks", "overlap_min_tokens",
            "schedule"});
    SweepPlan sp;
    if (p["file"]) sp.file = r.str(p["file"], "plans[].file");
    if (p["tensor"]) sp.tp = static_cast<int>(r.integer(p["tensor"], "plans[].tensor", 1));
    if (p["pipeline"]) sp.pp = static_cast<int>(r.integer(p["pipeline"], "plans[].pipeline", 1));
    if (p["data"]) sp.dp = static_cast<int>(r.integer(p["data"], "plans[].data", 1));
    if (p["micro_batches"]) sp.micro_batches = static_cast<int>(r.integer(p["micro_batches"], "plans[].micro_batches", 1));
    if (p["overlap_chunks"]) sp.overlap_chunks = static_cast<int>(r.integer(p["overlap_chunks"], "plans[].overlap_chunks", 1));
    if (p["overlap_min_tokens"])
      sp.overlap_min_tokens = static_cast<int>(r.integer(p["overlap_min_tokens"], "plans[].overlap_min_tokens", 1));
    if (p["schedule"]) {
      const std::string sched = r.str(p["schedule"], "plans[].schedule");
      if (sched != "steps" && sched != "interleaved")
        r.fail(p["schedule"], cat("plans[].schedule must be steps or interleaved, got '", sched, "'"));
      sp.interleaved = sched == "interleaved";
    }
    sp.name = p["name"] ? r.str(p["name"], "plans[].name") : cat("tp", sp.tp, "-pp", sp.pp, "-dp", sp.dp);
    if (!names.insert(sp.name).second) r.fail(p, cat("two plans are named '", sp.name, "'; names must be unique"));
    s.plans.push_back(sp);
  }
  if (root["batch"]) s.batches = r.integers(root["batch"], "batch");
  if (root["prompt_len"]) s.prompt_lens = r.integers(root["prompt_len"], "prompt_len");
  if (root["output_len"]) s.output_lens = r.integers(root["output_len"], "output_len");
  for (int64_t o : s.output_lens)
    if (o < 2) r.fail(root["output_len"], "output_len must be at least 2 (one decode step after the prefill)");
  if (const YAML::Node w = root["weak_scaling"]) {
    r.keys(w, "weak_scaling", {"batch_per_rank"});
    if (w["batch_per_rank"]) s.weak_batch_per_rank = r.integer(w["batch_per_rank"], "weak_scaling.batch_per_rank", 1);
  }
  if (root["timeout_s"]) s.timeout_s = static_cast<int>(r.integer(root["timeout_s"], "timeout_s", 1));
  return s;
}

}  // namespace strata::parallel
