// launcher/model_session.cpp: wiring of one rank's model.
#include "launcher/model_session.h"

#include <algorithm>
#include <fstream>

#include "offload/tiered_weights.h"
#include "runtime/error.h"
#include "runtime/log.h"
#ifdef STRATA_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif

namespace strata::launcher {

int cuda_device_index(const std::string& device) {
  if (device.rfind("cuda", 0) != 0) return -1;
  if (device == "cuda") return 0;
  STRATA_CHECK(device.size() > 5 && device[4] == ':' && device.find_first_not_of("0123456789", 5) == std::string::npos,
               "device '", device, "' is not cpu, cuda or cuda:N");
  return std::stoi(device.substr(5));
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads, const BackendSettings& settings) {
  if (device == "cpu") {
    if (!settings.kernel_keys.empty())
      LOG_INFO("--kernel-options ", settings.kernel_keys.front(),
               settings.kernel_keys.size() > 1 ? " (and others)" : "", ": CUDA kernel forms, ignored on the CPU");
    return make_cpu_backend(threads, settings.cpu_repack);
  }
  if (device.rfind("cuda", 0) == 0) {
#ifdef STRATA_HAVE_CUDA
    return make_cuda_backend(cuda_device_index(device), settings.cuda);
#else
    STRATA_THROW(ErrorKind::kInvalidArgument, "the CUDA backend is not built into this binary; rebuild with "
                 "-DSTRATA_CUDA=ON on a machine with the CUDA toolkit, or use --device cpu");
#endif
  }
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown device '", device, "'; use cpu, cuda or cuda:N");
}

ModelSession::ModelSession(const SessionOptions& options, const RankPlacement& placement,
                           std::unique_ptr<Backend> backend)
    : backend_(std::move(backend)), options_(options) {
  checkpoint_ = open_checkpoint(options.model_path, CheckpointOptions{options.threads});
  const ModelConfig& c = checkpoint_->config();
  if (!backend_) backend_ = make_backend(options.device, options.threads, options.backend);
  spec_ = placement.shard ? *placement.shard : ShardSpec::make(c, 0, 1, 0, c.n_layers);
  if (placement.tp != nullptr) {
    tp_ = placement.tp;
  } else {
    own_tp_ = std::make_unique<LocalCollective>();
    tp_ = own_tp_.get();
  }
  experts_ = placement.experts;
  if (placement.link != nullptr) {
    link_ = placement.link;
  } else {
    own_link_ = std::make_unique<LocalStageLink>();
    link_ = own_link_.get();
  }
  if (options.offload) {  // offload: tiers under budgets (its bytes are counted without streaming them)
    offload::ResidencyConfig residency = *options.offload;
    if (residency.kv_reserve_bytes == 0 && options.kv_tokens > 0) {  // the cache prepare() will make
      const KvCacheShape kv = kv_shape(options.kv_tokens);
      residency.kv_reserve_bytes = kv.num_blocks * kv.block_bytes(kv_cache_dtype());
    }
    auto tiered = offload::make_tiered_weights(*checkpoint_, spec_, *backend_, residency);
    tiered_ = tiered.get();
    weight_bytes_ = tiered->layer_bytes();
    for (const offload::TensorItem& item : offload::shard_items(*checkpoint_, spec_))
      if (item.expert >= 0) expert_weight_bytes_ += item.bytes;
    weights_ = std::move(tiered);
  } else {
    weights_ = make_resident_weights(*checkpoint_, spec_, *backend_);
    for (int64_t l = spec_.layer_begin; l < spec_.layer_end; ++l) {
      const LayerWeights& w = weights_->acquire(l);
      weight_bytes_ += w.nbytes();
      expert_weight_bytes_ += w.routed_expert_nbytes();
      weights_->release(l);
    }
  }
  if (checkpoint_->tokenizer()) tokenizer_ = Tokenizer::create(*checkpoint_->tokenizer());
  LOG_DEBUG("loaded ", checkpoint_->format(), " model ", options.model_path, ": layers [", spec_.layer_begin, ", ",
            spec_.layer_end, ") tp ", spec_.tp_rank, "/", spec_.tp_size, ", ", weight_bytes_, " layer weight bytes, ",
            checkpoint_->bytes_touched(), " bytes of the checkpoint read, ", checkpoint_->tensors_built(),
            " tensors (", checkpoint_->bytes_built(), " bytes) transcoded");
}

KvCacheShape ModelSession::kv_shape(int64_t tokens) const {
  KvCacheShape kv;
  kv.n_layers = spec_.n_layers();
  kv.block_size = options_.block_size;
  kv.kv_heads = spec_.kv_heads;
  kv.head_dim = checkpoint_->config().head_dim;
  kv.num_blocks = std::max<int64_t>(1, (tokens + kv.block_size - 1) / kv.block_size);
  return kv;
}

void ModelSession::prepare(int64_t tokens) {
  const ModelConfig& c = checkpoint_->config();
  const KvCacheShape kv = kv_shape(options_.kv_tokens > 0 ? options_.kv_tokens : tokens);
  if (kv_ && kv_->shape().num_blocks >= kv.num_blocks) return;
  generator_.reset();
  model_.reset();
  kv_.reset();
  kv_ = std::make_unique<KvCache>(*backend_, kv, kv_cache_dtype());
  model_ = std::make_unique<LlamaModel>(c, spec_, *backend_, *weights_, *tp_, *kv_);
  model_->set_overlap_chunks(options_.overlap_chunks, options_.overlap_min_tokens);
  if (experts_ != nullptr) model_->set_expert_group(*experts_);
  GeneratorOptions generator = options_.generator;
  generator.batch_wait_ms = tiered_ != nullptr && tiered_->placement().streams() ? options_.batch_wait_ms : 0;
  generator.speculative = make_speculation(options_.speculative, *checkpoint_, *backend_, link_->is_driver(),
                                           kv.num_blocks * kv.block_size, kv.block_size, kv_cache_dtype(), draft_);
  generator_ = std::make_unique<Generator>(*model_, *kv_, *link_, *backend_, generator);
  LOG_DEBUG("KV cache: ", kv.num_blocks, " blocks of ", kv.block_size, " tokens, ",
            kv.num_blocks * kv.block_bytes(kv_cache_dtype()), " bytes");
}

DType ModelSession::kv_cache_dtype() const { return options_.kv_cache_dtype.value_or(backend_->activation_dtype()); }

int64_t ModelSession::kv_bytes() const {
  return kv_ ? kv_->shape().num_blocks * kv_->shape().block_bytes(kv_->dtype()) : 0;
}

int64_t ModelSession::kv_bytes_per_token() const {
  KvCacheShape token = kv_shape(1);
  token.block_size = 1;
  return token.block_bytes(kv_cache_dtype());
}

int64_t ModelSession::device_free_bytes() const {
  if (backend_->device() == Device::kCuda) {
#ifdef STRATA_HAVE_CUDA
    return cuda_free_bytes(backend_->device_index());
#endif
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  STRATA_THROW(ErrorKind::kIo, "cannot read MemAvailable from /proc/meminfo to size the KV cache; give its size instead "
               "(--kv-tokens, serve.kv_blocks, or kv_budget as bytes)");
}

Generator& ModelSession::generator() {
  STRATA_CHECK_KIND(ErrorKind::kInternal, generator_ != nullptr, "ModelSession::prepare() was not called");
  return *generator_;
}

ModelSession::~ModelSession() = default;

const Tokenizer& ModelSession::tokenizer() const {
  STRATA_CHECK(tokenizer_ != nullptr, "the model ", checkpoint_->path(),
               " has no tokenizer (no tokenizer.json/tokenizer.model beside it, none embedded); pass token ids with "
               "--prompt-ids instead of text");
  return *tokenizer_;
}

}  // namespace strata::launcher
