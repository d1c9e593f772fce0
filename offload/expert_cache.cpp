// offload/expert_cache.cpp: the two-tier expert store and its per-layer ExpertSource (see the header).
#include "offload/expert_cache.h"

#include "runtime/error.h"

namespace strata::offload {

// One layer's view: the rounds of the step being planned and the round being run.
class ExpertCache::Layer final : public ExpertSource {
 public:
  Layer(ExpertCache& cache, int64_t l) : cache_(cache), l_(l) {}

  int64_t held() const override { return static_cast<int64_t>(cache_.layouts_[static_cast<size_t>(l_)].size()); }

  std::vector<std::vector<int64_t>> plan(const std::vector<int64_t>& tokens) override {
    rounds_ = cache_.policy_.plan(l_, tokens);
    std::vector<std::vector<int64_t>> out;
    for (const ExpertRound& r : rounds_) out.push_back(r.experts);
    return out;
  }

  std::vector<ExpertTensors> acquire(size_t round) override {
    STRATA_CHECK_KIND(ErrorKind::kInternal, round < rounds_.size(), "expert round ", round, " of ", rounds_.size());
    current_ = &rounds_[round];
    const ExpertRound& r = *current_;
    // Every miss's copy first, in one pass: on CUDA they queue on the copy stream back to back, and each
    // expert's compute waits only for its own (ready()), so later copies overlap earlier experts' matmuls.
    for (size_t i = 0; i < r.experts.size(); ++i) {
      if (!r.fetch[i]) continue;
      const int slot = cache_.engine_slot(l_, r.slots[i]);
      cache_.engine_.begin_fill(slot);  // compute is done with the expert this slot held
      cache_.copy_in(l_, r.experts[i], r.slots[i]);
      cache_.engine_.end_fill(slot);
    }
    std::vector<ExpertTensors> out;
    const Device device = cache_.engine_.device();
    for (size_t i = 0; i < r.experts.size(); ++i) {
      const ExpertLayout& lay = cache_.layouts_[static_cast<size_t>(l_)][static_cast<size_t>(r.experts[i])];
      uint8_t* base = cache_.slot_ptr(l_, r.slots[i]);
      out.push_back({Tensor::view(base, lay.gate_shape, lay.gate_dtype, device),
                     Tensor::view(base + lay.up_offset, lay.up_shape, lay.up_dtype, device),
                     Tensor::view(base + lay.down_offset, lay.down_shape, lay.down_dtype, device)});
    }
    return out;
  }

  void ready(size_t i) override {
    STRATA_CHECK_KIND(ErrorKind::kInternal, current_ != nullptr && i < current_->slots.size(), "expert ", i,
                      " of no acquired round");
    cache_.engine_.compute_acquires(cache_.engine_slot(l_, current_->slots[i]));
  }

  void release() override {
    if (current_ == nullptr) return;
    for (int slot : current_->slots) cache_.engine_.compute_releases(cache_.engine_slot(l_, slot));
    current_ = nullptr;
  }

 private:
  ExpertCache& cache_;
  int64_t l_;
  std::vector<ExpertRound> rounds_;
  const ExpertRound* current_ = nullptr;
};

namespace {
int64_t held_of(const std::vector<std::vector<ExpertLayout>>& layouts) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, !layouts.empty() && !layouts.front().empty(), "expert cache of no experts");
  for (const auto& l : layouts)
    STRATA_CHECK_KIND(ErrorKind::kInternal, l.size() == layouts.front().size(), "expert layers hold ", l.size(),
                      " and ", layouts.front().size(), " experts");
  return static_cast<int64_t>(layouts.front().size());
}
}  // namespace

ExpertCache::ExpertCache(CopyEngine& engine, std::vector<std::vector<ExpertLayout>> layouts,
                         std::vector<std::vector<ExpertBytes>> host, uint8_t* device, int64_t slot_bytes, int slots,
                         ExpertEviction eviction, std::vector<int64_t> layer_index, int64_t expert_first)
    : engine_(engine),
      layouts_(std::move(layouts)),
      host_(std::move(host)),
      device_(device),
      slot_bytes_(slot_bytes),
      policy_(static_cast<int64_t>(layouts_.size()), held_of(layouts_), slots, eviction),
      layer_index_(std::move(layer_index)),
      expert_first_(expert_first) {
  engine_.set_slots(static_cast<int>(layouts_.size()) * slots);
  // The policy starts with expert s in slot s: copy them in now (load time, not counted as streamed).
  const int64_t streamed = bytes_streamed_;
  for (int64_t l = 0; l < policy_.layers(); ++l) {
    for (int s = 0; s < slots; ++s) {
      const int64_t e = policy_.expert_in(l, s);
      const ExpertLayout& lay = layouts_[static_cast<size_t>(l)][static_cast<size_t>(e)];
      STRATA_CHECK_KIND(ErrorKind::kInternal, lay.bytes <= slot_bytes_, "expert of ", lay.bytes, " bytes in a ",
                        slot_bytes_, "-byte slot");
      engine_.begin_fill(engine_slot(l, s));
      copy_in(l, e, s);
      engine_.end_fill(engine_slot(l, s));
    }
    layers_.push_back(std::make_unique<Layer>(*this, l));
  }
  bytes_streamed_ = streamed;  // the initial fill is loading, not streaming
}

void ExpertCache::copy_in(int64_t l, int64_t e, int slot) {
  const ExpertLayout& lay = layouts_[static_cast<size_t>(l)][static_cast<size_t>(e)];
  const ExpertBytes& src = host_[static_cast<size_t>(l)][static_cast<size_t>(e)];
  uint8_t* dst = slot_ptr(l, slot);
  if (src[1] == src[0] + lay.up_offset && src[2] == src[0] + lay.down_offset) {  // packed: one copy
    engine_.copy_to_device(dst, src[0], static_cast<size_t>(lay.bytes));
  } else {
    engine_.copy_to_device(dst, src[0], static_cast<size_t>(lay.gate_bytes));
    engine_.copy_to_device(dst + lay.up_offset, src[1], static_cast<size_t>(lay.up_bytes));
    engine_.copy_to_device(dst + lay.down_offset, src[2], static_cast<size_t>(lay.down_bytes));
  }
  bytes_streamed_ += lay.gate_bytes + lay.up_bytes + lay.down_bytes;
}

ExpertCache::~ExpertCache() = default;

ExpertSource* ExpertCache::layer(int64_t l) { return layers_.at(static_cast<size_t>(l)).get(); }

uint8_t* ExpertCache::slot_ptr(int64_t l, int slot) const {
  return device_ + static_cast<int64_t>(engine_slot(l, slot)) * slot_bytes_;
}

const uint8_t* ExpertCache::slot_data(int64_t l, int slot) const { return slot_ptr(l, slot); }

ExpertCacheStats ExpertCache::stats() const {
  ExpertCacheStats s;
  s.layers = policy_.layers();
  s.experts = policy_.experts();
  s.expert_first = expert_first_;
  s.layer_index = layer_index_;
  s.resident_per_layer = policy_.slots();
  const ExpertLayout& first = layouts_.front().front();
  s.expert_bytes = first.gate_bytes + first.up_bytes + first.down_bytes;
  s.hits = policy_.hits();
  s.misses = policy_.misses();
  s.bytes_streamed = bytes_streamed_;
  return s;
}

std::string expert_cache_json(const Placement& p, const ExpertCacheStats& s) {
  if (!s.enabled()) return "null";
  auto rate = [](int64_t hits, int64_t misses) {
    return hits + misses > 0 ? static_cast<double>(hits) / static_cast<double>(hits + misses) : 0.0;
  };
  int64_t hits = 0, misses = 0;
  std::vector<int64_t> expert_hits(static_cast<size_t>(s.experts), 0), expert_misses(static_cast<size_t>(s.experts), 0);
  std::string layers;
  for (int64_t l = 0; l < s.layers; ++l) {
    int64_t lh = 0, lm = 0;
    for (int64_t e = 0; e < s.experts; ++e) {
      const auto i = static_cast<size_t>(l * s.experts + e);
      lh += s.hits[i], lm += s.misses[i];
      expert_hits[static_cast<size_t>(e)] += s.hits[i], expert_misses[static_cast<size_t>(e)] += s.misses[i];
    }
    hits += lh, misses += lm;
    layers += cat(l ? ", " : "", "{\"layer\": ", s.layer_index[static_cast<size_t>(l)], ", \"hits\": ", lh,
                  ", \"misses\": ", lm, ", \"hit_rate\": ", rate(lh, lm), "}");
  }
  std::string experts;
  for (int64_t e = 0; e < s.experts; ++e) {
    const auto i = static_cast<size_t>(e);
    experts += cat(e ? ", " : "", "{\"expert\": ", s.expert_first + e, ", \"hits\": ", expert_hits[i],
                   ", \"misses\": ", expert_misses[i], ", \"hit_rate\": ", rate(expert_hits[i], expert_misses[i]), "}");
  }
  return cat("{\"resident_per_layer\": ", s.resident_per_layer, ", \"experts_per_layer\": ", s.experts,
             ", \"layers\": ", s.layers, ", \"eviction\": \"", eviction_name(p.expert_eviction), "\", \"tier\": \"", tier_name(p.expert_tier),
             "\", \"cache_bytes\": ", p.expert_cache_bytes(), ", \"expert_bytes\": ", p.expert_bytes,
             ", \"resident_expert_bytes\": ", p.expert_resident_bytes(), ", \"streamed_expert_bytes\": ",
             p.expert_streamed_bytes(), ", \"bytes_per_fetch\": ", s.expert_bytes, ", \"hits\": ", hits,
             ", \"misses\": ", misses, ", \"hit_rate\": ", rate(hits, misses), ", \"bytes_streamed\": ",
             s.bytes_streamed, ", \"per_layer\": [", layers, "], \"per_expert\": [", experts, "]}");
}

}  // namespace strata::offload
