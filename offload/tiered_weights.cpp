// offload/tiered_weights.cpp: builds the tiers of one rank (uploads, host copies, open files, the
// ring) and serves acquire/release from them. All memory is taken here, at load time.
#include "offload/tiered_weights.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <map>

#include "offload/compute_pool.h"
#include "offload/copy_engine.h"
#include "offload/expert_cache.h"
#include "offload/shard_layout.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::offload {

struct TieredWeights::Impl {
  ResidencyConfig config;
  ShardSpec spec;
  Placement placement;
  std::unique_ptr<CopyEngine> engine;
  std::unique_ptr<ComputePool> pool;
  std::vector<std::unique_ptr<CheckpointFile>> files;
  std::shared_ptr<void> host_block, staging_block;
  int64_t host_tier_bytes = 0, staging_bytes = 0, layer_bytes = 0;
  GlobalWeights globals;
  std::vector<LayerWeights> resident;           // per local layer; streamed fields left undefined
  std::vector<int64_t> stream_index;            // per local layer: index of its streamed part, -1 = none
  std::vector<std::vector<LayerWeights>> views;  // [streamed index][slot]: resident fields + slot views
  std::unique_ptr<Prefetcher> prefetcher;
  std::shared_ptr<void> expert_host_block;
  std::unique_ptr<ExpertCache> experts;  // the expert cache (placement "experts cached")
  // Keep the checkpoint bytes the disk tier and the expert cache read by address or offset built (a tensor
  // built on access hands its memory back once nothing pins it, checkpoint.h).
  std::vector<std::shared_ptr<void>> pins;

  int64_t local(int64_t layer) const {
    STRATA_CHECK_KIND(ErrorKind::kInternal, layer >= spec.layer_begin && layer < spec.layer_end, "layer ", layer,
                      " is not on this stage [", spec.layer_begin, ", ", spec.layer_end, ")");
    return layer - spec.layer_begin;
  }
  const CheckpointFile* file_for(const Checkpoint& ck, const TensorEntry& e) {
    for (const auto& f : files)
      if (f->path() == e.file) return f.get();
    uint64_t end = 0;
    for (const TensorEntry& other : ck.entries())
      if (other.file == e.file) end = std::max(end, other.offset + other.nbytes);
    files.push_back(std::make_unique<CheckpointFile>(e.file, end, config.disk_io));
    return files.back().get();
  }
};

std::vector<TensorItem> shard_items(const Checkpoint& checkpoint, const ShardSpec& spec) {
  std::vector<TensorItem> items;
  for (const ShardTensor& t : shard_tensors(checkpoint, spec))
    items.push_back({t.ref.name, t.ref.layer, t.nbytes, tensor_group(*t.ref.slot), t.ref.expert});
  return items;
}

namespace {

// The routed experts of a rank on the expert cache's two tiers. Host tier: each expert's gate, up and down
// are uploaded as the resident path would (so the bytes, and any dtype conversion, are those of the
// all-resident run), brought back into the host block packed per expert, and the device copy dropped.
// Disk tier: the memory-mapped checkpoint's bytes, read when fetched (the page cache keeps hot ones), kept
// mapped by `pins`.
std::unique_ptr<ExpertCache> build_expert_cache(const Checkpoint& ck, const ShardSpec& spec,
                                                const std::vector<ShardTensor>& tensors, const Placement& p,
                                                Backend& backend, CopyEngine& engine, ComputePool& pool,
                                                std::shared_ptr<void>& host_block,
                                                std::vector<std::shared_ptr<void>>& pins) {
  std::map<int64_t, std::map<int64_t, std::array<size_t, 3>>> parts;  // layer -> expert -> gate/up/down index
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRef& ref = tensors[i].ref;
    if (ref.expert < 0) continue;
    const auto field = ref.slot->expert_field;
    const int which = field == &LayerWeights::expert_gate ? 0 : field == &LayerWeights::expert_up ? 1 : 2;
    parts[ref.layer].try_emplace(ref.expert, std::array<size_t, 3>{SIZE_MAX, SIZE_MAX, SIZE_MAX})
        .first->second[static_cast<size_t>(which)] = i;
  }
  const int64_t slot_bytes = p.expert_slot_bytes, held = p.experts_held;
  const auto layers = static_cast<int64_t>(parts.size());
  const bool from_disk = p.expert_tier == Tier::kDisk;
  if (!from_disk) host_block = engine.allocate_host(static_cast<size_t>(layers * held * slot_bytes));
  auto* host = static_cast<uint8_t*>(host_block.get());
  std::vector<std::vector<ExpertLayout>> layouts;
  std::vector<std::vector<ExpertBytes>> host_of;
  std::vector<int64_t> layer_index;
  for (const auto& [layer, experts] : parts) {
    STRATA_CHECK_KIND(ErrorKind::kInternal, static_cast<int64_t>(experts.size()) == held, "layer ", layer, " holds ",
                      experts.size(), " experts, the placement ", held);
    layer_index.push_back(layer);
    layouts.emplace_back();
    host_of.emplace_back();
    for (const auto& [expert, idx] : experts) {
      uint8_t* dst =
          from_disk ? nullptr
                    : host + (static_cast<int64_t>(layouts.size() - 1) * held + static_cast<int64_t>(layouts.back().size())) *
                                 slot_bytes;
      ExpertLayout lay;
      ExpertBytes src{};
      int64_t offset = 0;
      for (size_t j = 0; j < 3; ++j) {
        STRATA_CHECK_KIND(ErrorKind::kInternal, idx[j] != SIZE_MAX, "expert ", expert, " of layer ", layer,
                          " lacks a tensor");
        const ShardTensor& t = tensors[idx[j]];
        Tensor bytes;
        if (from_disk) {  // the mapped checkpoint's own bytes, as the CPU backend computes on them
          bytes = mapped_slice(ck, t);
          pins.push_back(bytes.keepalive());  // the cache reads src[j] long after this view goes
          STRATA_CHECK_KIND(ErrorKind::kConfig, backend.device() == Device::kCpu || t.dtype != DType::kF32,
                            t.ref.name, " is f32, which the ", backend.name(), " backend converts at upload, so the "
                            "experts cannot be read from the checkpoint as they are; use offload.cold_tier: host");
          src[j] = static_cast<const uint8_t*>(bytes.raw());
        } else {  // uploaded as the resident path would, then brought back into the host block
          const Tensor dev = backend.upload_weight(mapped_slice(ck, t));
          bytes = Tensor::view(dst + offset, dev.shape(), dev.dtype());
          backend.copy(dev, bytes);
          src[j] = dst + offset;
        }
        STRATA_CHECK_KIND(ErrorKind::kInternal, offset + bytes.nbytes() <= slot_bytes, "expert ", expert, " of layer ",
                          layer, " overflows its ", slot_bytes, "-byte slot");
        (j == 0 ? lay.gate_shape : j == 1 ? lay.up_shape : lay.down_shape) = bytes.shape();
        (j == 0 ? lay.gate_dtype : j == 1 ? lay.up_dtype : lay.down_dtype) = bytes.dtype();
        (j == 0 ? lay.gate_bytes : j == 1 ? lay.up_bytes : lay.down_bytes) = bytes.nbytes();
        if (j == 1) lay.up_offset = offset;
        if (j == 2) lay.down_offset = offset;
        lay.bytes = offset + bytes.nbytes();
        offset = (lay.bytes + 255) / 256 * 256;
      }
      layouts.back().push_back(lay);
      host_of.back().push_back(src);
    }
  }
  backend.synchronize();
  const int slots = p.expert_slots;
  auto* device = static_cast<uint8_t*>(pool.allocate(
      p.expert_cache_bytes(), cat("the expert cache (", slots, " experts x ", layers, " layers x ",
                                  format_size(slot_bytes), ")")));
  return std::make_unique<ExpertCache>(engine, std::move(layouts), std::move(host_of), device, slot_bytes, slots,
                                       p.expert_eviction, std::move(layer_index), spec.expert_begin);
}

}  // namespace

TieredWeights::TieredWeights(const Checkpoint& ck, const ShardSpec& spec, Backend& backend,
                             const ResidencyConfig& config)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  m.spec = spec;
  m.engine = make_copy_engine(backend);
  m.config.device_budget = m.config.device_budget_bytes(m.engine->device_memory());
  const bool tied = spec.last_stage && ck.config().tied_embeddings;
  const std::vector<ShardTensor> tensors = shard_tensors(ck, spec);
  std::vector<TensorItem> items;
  for (const ShardTensor& t : tensors)
    items.push_back({t.ref.name, t.ref.layer, t.nbytes, tensor_group(*t.ref.slot), t.ref.expert});
  m.placement = place(items, m.config, ck.config().moe.n_used);
  const bool cache_experts = m.placement.expert_slots > 0;
  STRATA_CHECK_KIND(ErrorKind::kConfig, cache_experts || !m.placement.streams() || (!ck.config().moe.enabled() && !ck.config().qk_norm),
                    ck.path(), ": ", ck.config().arch, " layers cannot stream whole yet (experts and q/k norms are not "
                    "in the streamed layout); ", ck.config().moe.enabled() ? "let the experts stream instead "
                    "(offload.experts) or " : "", "run this model resident: no device budget or offload section");
  m.pool = std::make_unique<ComputePool>(*m.engine, m.config.device_budget);
  m.pool->charge(m.placement.kv_reserve_bytes, "the KV cache reserve");

  const size_t n_local = static_cast<size_t>(spec.n_layers());
  m.resident.resize(n_local);
  m.stream_index.assign(n_local, -1);
  // Resident tensors go through the backend's own upload, so their bytes (and any dtype
  // conversion) are exactly those of the all-resident source.
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ShardTensor& t = tensors[i];
    if (t.ref.layer >= 0) m.layer_bytes += t.nbytes;
    if (t.ref.expert >= 0) m.resident[static_cast<size_t>(m.local(t.ref.layer))].expert_first = spec.expert_begin;
    if (m.placement.tiers[i] != Tier::kDevice) continue;
    Tensor dev = backend.upload_weight(mapped_slice(ck, t));
    m.pool->charge(dev.nbytes(), t.ref.name);
    if (t.ref.layer < 0) slot_field(t.ref, m.globals) = dev;
    else slot_field(t.ref, m.resident[static_cast<size_t>(m.local(t.ref.layer))]) = dev;
  }
  if (tied) m.globals.output = m.globals.embed;
  if (cache_experts) {  // the routed experts go to the expert cache; nothing else streams
    m.experts = build_expert_cache(ck, spec, tensors, m.placement, backend, *m.engine, *m.pool, m.expert_host_block,
                                   m.pins);
    const ExpertCacheStats s = m.experts->stats();
    for (int64_t l = 0; l < s.layers; ++l)
      m.resident[static_cast<size_t>(m.local(s.layer_index[static_cast<size_t>(l)]))].expert_source = m.experts->layer(l);
    const Placement& p = m.placement;
    LOG_INFO("offload (experts cached, ", eviction_name(p.expert_eviction), ", ", m.engine->name(), "): device ",
             format_size(p.device_bytes()), " of ",
             m.config.device_budget < 0 ? std::string("unlimited") : format_size(m.config.device_budget),
             " (other weights ", format_size(p.resident_bytes), ", KV reserve ", format_size(p.kv_reserve_bytes),
             ", ", p.expert_slots, " of ", p.experts_held, " experts x ", p.expert_layers, " layers, ",
             format_size(p.expert_cache_bytes()), "), experts fetched from ",
             p.expert_tier == Tier::kDisk ? "the mapped checkpoint " : "pinned host memory ", format_size(p.expert_bytes));
    return;
  }

  // Host tier: one block (pinned under CUDA) holding every host tensor, copied from the mapping once.
  for (size_t i = 0; i < tensors.size(); ++i)
    if (m.placement.tiers[i] == Tier::kHost) m.host_tier_bytes += (tensors[i].nbytes + 255) / 256 * 256;
  if (m.host_tier_bytes > 0) m.host_block = m.engine->allocate_host(static_cast<size_t>(m.host_tier_bytes));
  std::vector<StreamedLayer> streamed;
  std::vector<std::vector<size_t>> streamed_tensor;  // per streamed layer: indices into `tensors`
  int64_t host_cursor = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ShardTensor& t = tensors[i];
    const Tier tier = m.placement.tiers[i];
    if (tier == Tier::kDevice) continue;
    const int64_t li = m.local(t.ref.layer);
    if (m.stream_index[static_cast<size_t>(li)] < 0) {
      m.stream_index[static_cast<size_t>(li)] = static_cast<int64_t>(streamed.size());
      streamed.push_back({t.ref.layer, {}});
      streamed_tensor.emplace_back();
    }
    StreamedTensor s;
    s.name = t.ref.name;
    s.tier = tier;
    s.nbytes = t.nbytes;
    if (tier == Tier::kHost) {
      auto* dst = static_cast<uint8_t*>(m.host_block.get()) + host_cursor;
      copy_mapped_slice(ck, t, dst);
      s.host = dst;
      host_cursor += (t.nbytes + 255) / 256 * 256;
    } else {
      m.pins.push_back(ck.materialize(t.ref.name));  // a tensor built on access is in its file while pinned
      s.file = m.file_for(ck, *t.entry);
      s.segments = t.segments;
    }
    streamed.back().tensors.push_back(std::move(s));
    streamed_tensor.back().push_back(i);
  }
  if (streamed.empty()) return;

  int64_t slot_bytes = 0;
  lay_out_slots(streamed, m.engine->device_is_host(), &slot_bytes, &m.staging_bytes);
  STRATA_CHECK_KIND(ErrorKind::kInternal, slot_bytes <= m.placement.slot_bytes, "slot layout of ", slot_bytes,
                    " bytes exceeds the placement's ", m.placement.slot_bytes);
  slot_bytes = m.placement.slot_bytes;  // what the budget check counted
  const int slots = m.placement.slots;
  auto* ring = static_cast<uint8_t*>(m.pool->allocate(slot_bytes * slots, cat("the staging ring (", slots, " slots of ",
                                                                                format_size(slot_bytes), ")")));
  uint8_t* staging = nullptr;
  if (m.staging_bytes > 0) {
    m.staging_block = m.engine->allocate_host(static_cast<size_t>(m.staging_bytes * slots));
    staging = static_cast<uint8_t*>(m.staging_block.get());
  }
  m.views.resize(streamed.size());
  for (size_t k = 0; k < streamed.size(); ++k) {
    const LayerWeights& base = m.resident[static_cast<size_t>(m.local(streamed[k].layer))];
    for (int s = 0; s < slots; ++s) {
      LayerWeights w = base;
      for (size_t j = 0; j < streamed[k].tensors.size(); ++j) {
        const ShardTensor& t = tensors[streamed_tensor[k][j]];
        slot_field(t.ref, w) = Tensor::view(ring + s * slot_bytes + streamed[k].tensors[j].device_offset, t.shape,
                                               t.dtype, m.engine->device());
      }
      m.views[k].push_back(std::move(w));
    }
  }
  for (const auto& f : m.files)
    if (f->direct()) LOG_DEBUG("offload: O_DIRECT reads from ", f->path());
  m.prefetcher = std::make_unique<Prefetcher>(std::move(streamed), *m.engine, slots, ring, slot_bytes, staging,
                                              m.staging_bytes, m.config.fill_log_capacity);
  const Placement& p = m.placement;
  LOG_INFO("offload (", p.strategy, ", ", m.engine->name(), "): device ", format_size(p.device_bytes()), " of ",
           m.config.device_budget < 0 ? std::string("unlimited") : format_size(m.config.device_budget), " (weights ",
           format_size(p.resident_bytes), ", KV reserve ", format_size(p.kv_reserve_bytes), ", ring ", slots, " x ",
           format_size(slot_bytes), "), streamed per pass: host ", format_size(p.host_bytes), ", disk ",
           format_size(p.disk_bytes), " over ", p.streamed_layers, " layers");
}

TieredWeights::~TieredWeights() {
  Impl& m = *impl_;
  try {
    const OffloadMetrics metrics = this->metrics();
    m.prefetcher.reset();
    if (m.engine) m.engine->drain();
    m.experts.reset();
    if (!m.config.report_path.empty()) {
      if (FILE* f = std::fopen(m.config.report_path.c_str(), "w")) {
        std::fprintf(f, "%s\n", metrics.json().c_str());
        std::fclose(f);
      } else {
        LOG_WARN("offload: cannot write the report to ", m.config.report_path);
      }
    }
  } catch (const std::exception& e) {
    LOG_WARN("offload teardown: ", e.what());
  }
}

const GlobalWeights& TieredWeights::globals() { return impl_->globals; }

const LayerWeights& TieredWeights::acquire(int64_t layer) {
  Impl& m = *impl_;
  const int64_t li = m.local(layer);
  const int64_t k = m.stream_index[static_cast<size_t>(li)];
  if (k < 0) return m.resident[static_cast<size_t>(li)];
  const int slot = m.prefetcher->acquire(k);
  return m.views[static_cast<size_t>(k)][static_cast<size_t>(slot)];
}

void TieredWeights::release(int64_t layer) {
  Impl& m = *impl_;
  const int64_t k = m.stream_index[static_cast<size_t>(m.local(layer))];
  if (k >= 0) m.prefetcher->release(k);
}

const Placement& TieredWeights::placement() const { return impl_->placement; }
int64_t TieredWeights::layer_bytes() const { return impl_->layer_bytes; }

std::vector<int64_t> TieredWeights::fill_order() const {
  return impl_->prefetcher ? impl_->prefetcher->fill_order() : std::vector<int64_t>{};
}

OffloadMetrics TieredWeights::metrics() const {
  const Impl& m = *impl_;
  OffloadMetrics out;
  out.placement = m.placement;
  if (m.prefetcher) out.stream = m.prefetcher->stats();
  out.pool_used = m.pool->used();
  out.pool_peak = m.pool->peak();
  out.pool_budget = m.pool->budget();
  out.host_tier_bytes = m.host_tier_bytes;
  out.staging_bytes = m.staging_bytes * m.placement.slots;
  out.engine = m.engine->name();
  for (const auto& f : m.files) out.direct_io = out.direct_io || f->direct();
  if (m.experts) out.experts = m.experts->stats();
  return out;
}

ExpertCacheStats TieredWeights::expert_cache_stats() const {
  return impl_->experts ? impl_->experts->stats() : ExpertCacheStats{};
}

const ExpertCache* TieredWeights::expert_cache() const { return impl_->experts.get(); }

std::string OffloadMetrics::json() const {
  const Placement& p = placement;
  return cat("{\"strategy\": \"", p.strategy, "\", \"engine\": \"", engine, "\", \"device_budget\": ", p.device_budget,
             ", \"resident_bytes\": ", p.resident_bytes, ", \"kv_reserve_bytes\": ", p.kv_reserve_bytes,
             ", \"slot_bytes\": ", p.slot_bytes, ", \"slots\": ", p.slots, ", \"host_bytes_per_pass\": ", p.host_bytes,
             ", \"disk_bytes_per_pass\": ", p.disk_bytes, ", \"streamed_layers\": ", p.streamed_layers,
             ", \"pool_used\": ", pool_used, ", \"pool_peak\": ", pool_peak, ", \"pool_budget\": ", pool_budget,
             ", \"host_tier_bytes\": ", host_tier_bytes, ", \"staging_bytes\": ", staging_bytes,
             ", \"direct_io\": ", direct_io ? "true" : "false", ", \"bytes_streamed_host\": ", stream.bytes_host,
             ", \"bytes_streamed_disk\": ", stream.bytes_disk, ", \"fills\": ", stream.fills,
             ", \"acquires\": ", stream.acquires, ", \"restarts\": ", stream.restarts,
             ", \"acquire_wait_s\": ", stream.acquire_wait_s, ", \"fill_s\": ", stream.fill_s,
             ", \"expert_cache\": ", expert_cache_json(placement, experts), "}");
}

std::unique_ptr<TieredWeights> make_tiered_weights(const Checkpoint& checkpoint, const ShardSpec& spec,
                                                   Backend& backend, const ResidencyConfig& config) {
  return std::make_unique<TieredWeights>(checkpoint, spec, backend, config);
}

}  // namespace strata::offload
