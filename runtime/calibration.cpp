// runtime/calibration.cpp: collect_activation_stats. RecordingBackend forwards every op to the CPU backend
// and, for the matmuls whose weight starts one of a layer's linear inputs, adds the input rows to that
// input's statistics before the product runs.
#include "runtime/calibration.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <unordered_map>

#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/error.h"
#include "runtime/forwarding_backend.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/generator.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/stage_link.h"
#include "runtime/weights.h"

namespace strata {

namespace {

class RecordingBackend final : public ForwardingBackend {
 public:
  RecordingBackend(std::unique_ptr<Backend> inner, const CalibrationOptions& options)
      : ForwardingBackend(std::move(inner)), options_(options), rng_(options.seed) {}

  // Which input a weight's matmul reads: keyed by the weight's data address (the CPU backend computes on the
  // mapped or uploaded tensor itself, so the address is stable for the run).
  void watch(const Tensor& weight, const std::string& key) {
    if (weight.defined()) watched_[weight.raw()] = key;
  }
  CalibrationStats take() { return std::move(stats_); }
  // Each scored window runs as one step, so every recorded matmul holds `rows` rows from position 0 on.
  void set_window_rows(int64_t rows) { window_rows_ = rows; }

  std::string name() const override { return "calibration(" + ForwardingBackend::name() + ")"; }
  // matmul_swiglu and rope_kv_attention keep the base's "not fused" answer, so every product goes through matmul.
  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    if (auto it = watched_.find(w.raw()); it != watched_.end()) record(it->second, x);
    inner().matmul(x, w, bias, out);
  }

 private:
  void record(const std::string& key, const Tensor& x) {
    STRATA_CHECK_KIND(ErrorKind::kInternal, x.dtype() == DType::kF32 && x.shape().size() >= 2,
                      "calibration expects f32 activations at ", key);
    const int64_t channels = x.dim(-1), rows = x.numel() / channels;
    ChannelStats& s = stats_.inputs[key];
    if (s.channels == 0) {
      s.channels = channels;
      s.max_abs.assign(static_cast<size_t>(channels), 0.f);
      s.sum_abs.assign(static_cast<size_t>(channels), 0.0);
    }
    STRATA_CHECK_KIND(ErrorKind::kInternal, s.channels == channels && rows == window_rows_, "calibration input ", key,
                      " saw ", rows, " rows of ", channels, " in a window of ", window_rows_);
    const float* data = x.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = data + r * channels;
      ++s.rows;
      for (int64_t j = 0; j < channels; ++j)
        s.max_abs[static_cast<size_t>(j)] = std::max(s.max_abs[static_cast<size_t>(j)], std::fabs(row[j]));
      if (r == 0) continue;  // the window's first position (ChannelStats)
      for (int64_t j = 0; j < channels; ++j) s.sum_abs[static_cast<size_t>(j)] += std::fabs(row[j]);
      // Reservoir sampling (Vitter's algorithm R): every row seen so far is kept with equal probability.
      const int64_t seen = s.mean_rows++;
      int64_t slot = -1;
      if (s.sample_rows < options_.sample_rows) {
        slot = s.sample_rows++;
        s.sample.resize(static_cast<size_t>(s.sample_rows * channels));
      } else if (options_.sample_rows > 0) {
        const int64_t pick = std::uniform_int_distribution<int64_t>(0, seen)(rng_);
        if (pick < options_.sample_rows) slot = pick;
      }
      if (slot >= 0) std::copy(row, row + channels, s.sample.begin() + slot * channels);
    }
  }

  CalibrationOptions options_;
  std::mt19937_64 rng_;
  std::unordered_map<const void*, std::string> watched_;
  CalibrationStats stats_;
  int64_t window_rows_ = 0;
};

}  // namespace

std::string calibration_key(int64_t layer, LinearInput input) {
  static constexpr const char* kNames[] = {"attn_in", "attn_out", "ffn_in", "ffn_out"};
  return "blk." + std::to_string(layer) + "." + kNames[static_cast<int>(input)];
}

float ChannelStats::max_abs_all() const {
  return max_abs.empty() ? 0.f : *std::max_element(max_abs.begin(), max_abs.end());
}

const ChannelStats& CalibrationStats::at(int64_t layer, LinearInput input) const {
  const auto it = inputs.find(calibration_key(layer, input));
  STRATA_CHECK_KIND(ErrorKind::kInternal, it != inputs.end(), "no calibration statistics for ",
                    calibration_key(layer, input));
  return it->second;
}

CalibrationStats collect_activation_stats(const Checkpoint& checkpoint, const std::vector<int32_t>& ids,
                                          const CalibrationOptions& options) {
  const ModelConfig& config = checkpoint.config();
  STRATA_CHECK(ids.size() >= 2, "the calibration text holds ", ids.size(),
               " tokens; give a file of real text (a few thousand tokens or more)");
  STRATA_CHECK(!config.moe.enabled(), "calibration runs dense Llama-family models only");
  const int64_t context = std::clamp<int64_t>(options.context, 2, config.max_seq);

  RecordingBackend backend(make_cpu_backend(options.threads), options);
  const ShardSpec spec = ShardSpec::make(config, 0, 1, 0, config.n_layers);
  const std::unique_ptr<WeightSource> weights = make_resident_weights(checkpoint, spec, backend);
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const LayerWeights& w = weights->acquire(l);
    backend.watch(w.wq, calibration_key(l, LinearInput::kAttnIn));
    backend.watch(w.wqkv, calibration_key(l, LinearInput::kAttnIn));
    backend.watch(w.wo, calibration_key(l, LinearInput::kAttnOut));
    backend.watch(w.w_gate, calibration_key(l, LinearInput::kFfnIn));
    backend.watch(w.w_gate_up, calibration_key(l, LinearInput::kFfnIn));
    backend.watch(w.w_down, calibration_key(l, LinearInput::kFfnOut));
    weights->release(l);
  }
  LocalCollective tp;
  LocalStageLink link;
  KvCacheShape kv_shape;
  kv_shape.n_layers = config.n_layers;
  kv_shape.kv_heads = spec.kv_heads;
  kv_shape.head_dim = config.head_dim;
  kv_shape.num_blocks = (context + kv_shape.block_size - 1) / kv_shape.block_size + 1;
  KvCache kv(backend, kv_shape, DType::kF32);
  LlamaModel model(config, spec, backend, *weights, tp, kv);
  Generator generator(model, kv, link, backend);
  for (size_t begin = 0; begin + 1 < ids.size(); begin += static_cast<size_t>(context)) {
    const size_t end = std::min(ids.size(), begin + static_cast<size_t>(context));
    backend.set_window_rows(static_cast<int64_t>(end - begin));
    generator.score(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(begin),
                                         ids.begin() + static_cast<std::ptrdiff_t>(end)));
  }
  CalibrationStats stats = backend.take();
  stats.tokens = static_cast<int64_t>(ids.size());
  for (int64_t l = 0; l < config.n_layers; ++l)
    for (LinearInput in : {LinearInput::kAttnIn, LinearInput::kAttnOut, LinearInput::kFfnIn, LinearInput::kFfnOut})
      stats.at(l, in);  // every input was seen (throws otherwise)
  return stats;
}

}  // namespace strata
