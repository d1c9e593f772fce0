// launcher/model_session.h: one rank's loaded model: checkpoint, backend, this rank's weights, KV
// cache, decoder stage and generator, plus the tokenizer. The launcher builds it for a single rank
// or for one rank of a plan; subcommands only talk to it.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "launcher/kernel_options.h"
#include "launcher/speculation.h"
#include "offload/residency.h"
#include "parallel/plan.h"
#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/generator.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/stage_link.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/weights.h"

namespace strata::offload {
class TieredWeights;
}

namespace strata::launcher {

struct SessionOptions {
  std::string model_path;
  std::string mmproj_path;  // llama.cpp's vision projector GGUF beside a text-model GGUF (--mmproj, model.mmproj)
  std::string device = "cpu";    // cpu | cuda
  int threads = 0;               // CPU threads (0: OpenMP default)
  int64_t kv_tokens = 0;         // KV cache capacity in tokens (0: one full context)
  int64_t block_size = 16;
  // The KV cache's dtype (--kv-cache-dtype, serve.kv_cache_dtype): unset = the backend's activation dtype
  // (f32 on the CPU, bf16 on CUDA); f8_e4m3 stores e4m3 rows with a scale each (runtime/fp8_kv.h).
  std::optional<DType> kv_cache_dtype;
  GeneratorOptions generator;
  int overlap_chunks = 2;  // TP all-reduce / compute overlap (comm.overlap_chunks); 1 = off
  int overlap_min_tokens = parallel::kDefaultOverlapMinTokens;  // per chunk for a split (comm.overlap_min_tokens)
  // Weight offload (offload/): when set, weights are placed on tiers under its budgets and cold ones
  // stream; unset keeps every weight resident. Filled from --device-budget & co. or the plan.
  std::optional<offload::ResidencyConfig> offload;
  // offload.batch_wait_ms: used only when this rank's weights stream (prepare() passes it to the
  // engine then, 0 otherwise).
  double batch_wait_ms = 2.0;
  // The CUDA backend's options (--kernel-options, --cuda-graphs, --profile-ops); ignored on the CPU.
  BackendSettings backend;
  // Speculative decoding (--speculative & co., the plan's speculative section); prepare() builds it.
  SpeculativeSettings speculative;
};

// Where this rank sits in its replica; the default is a single rank holding the whole model.
struct RankPlacement {
  std::optional<ShardSpec> shard;  // the partition's split of the model; none: the whole model
  Collective* tp = nullptr;                 // null: LocalCollective
  Collective* experts = nullptr;            // the stage's expert group (tensor x expert ranks); null: tp
  StageLink* link = nullptr;                // null: LocalStageLink
};

class ModelSession {
 public:
  // `backend` (optional) is the compute backend to use; else one is made from options.device.
  ModelSession(const SessionOptions& options, const RankPlacement& placement = {},
               std::unique_ptr<Backend> backend = nullptr);
  ~ModelSession();

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  // Sizes the KV cache for `tokens` token slots (rounded up to blocks) and builds the model stage
  // and generator on it; the options' kv_tokens, when set, overrides. Call before generator().
  void prepare(int64_t tokens);
  Generator& generator();
  // The decoder stage (after prepare()), e.g. for its communication timings.
  const LlamaModel& model() const { return *model_; }
  Backend& backend() { return *backend_; }
  const ShardSpec& shard() const { return spec_; }
  // The tokenizer, or a clear error naming the checkpoint when it has none.
  const Tokenizer& tokenizer() const;
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  StageLink& link() { return *link_; }
  // Bytes of weights this rank holds and bytes of the memory map it read to get them.
  int64_t weight_bytes() const { return weight_bytes_; }
  // The routed experts' share of weight_bytes() (mixture-of-experts models; 0 when offloaded).
  int64_t expert_weight_bytes() const { return expert_weight_bytes_; }
  uint64_t checkpoint_bytes_read() const { return checkpoint_->bytes_touched(); }
  // The offloading weight source, or null when every weight is resident.
  offload::TieredWeights* offload() { return tiered_; }
  // This rank's tensor-parallel group (its CollectiveStats feed bench reports).
  const Collective& tp() const { return *tp_; }
  Collective& tp() { return *tp_; }  // for other work split over the group (the vision tower)
  // Bytes of the KV cache prepare() made (0 before).
  int64_t kv_bytes() const;
  // Bytes one token's K and V take on this rank (its layers and KV heads, in the KV cache dtype).
  int64_t kv_bytes_per_token() const;
  // The KV cache's dtype: the options' kv_cache_dtype, else the backend's activation dtype.
  DType kv_cache_dtype() const;
  // Memory the compute device has free now, after the weights: cudaMemGetInfo on a GPU, the kernel's
  // MemAvailable on the host. What a KV budget given as a share is a share of.
  int64_t device_free_bytes() const;

 private:
  // This rank's KV cache holding `tokens` token slots in whole blocks: the one formula behind the
  // cache prepare() makes, the offload KV reserve and kv_bytes_per_token().
  KvCacheShape kv_shape(int64_t tokens) const;

  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  ShardSpec spec_;
  std::unique_ptr<Collective> own_tp_;
  Collective* experts_ = nullptr;
  std::unique_ptr<StageLink> own_link_;
  Collective* tp_ = nullptr;
  StageLink* link_ = nullptr;
  std::unique_ptr<WeightSource> weights_;
  offload::TieredWeights* tiered_ = nullptr;  // weights_ when it offloads
  std::unique_ptr<KvCache> kv_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<DraftModel> draft_;  // the driver's draft model (--draft-model); outlives the generator
  std::unique_ptr<Generator> generator_;
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t weight_bytes_ = 0;
  int64_t expert_weight_bytes_ = 0;
  SessionOptions options_;
};

// Creates the backend named `device` ("cpu", "cuda", "cuda:N"); a backend missing from this build
// is a clear error at this seam.
// `settings` apply to a CUDA device; a CPU device notes (log) that it ignores any --kernel-options.
std::unique_ptr<Backend> make_backend(const std::string& device, int threads, const BackendSettings& settings);
// The CUDA device index of a device string ("cuda:3" -> 3, "cuda" -> 0); -1 for the CPU.
int cuda_device_index(const std::string& device);

}  // namespace strata::launcher
