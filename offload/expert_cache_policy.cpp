// offload/expert_cache_policy.cpp: rounds, eviction and hit accounting of the expert cache (see the header).
#include "offload/expert_cache_policy.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata::offload {

const char* eviction_name(ExpertEviction eviction) {
  return eviction == ExpertEviction::kLru ? "lru" : "frequency";
}

ExpertCachePolicy::ExpertCachePolicy(int64_t layers, int64_t experts, int slots, ExpertEviction eviction)
    : layers_(layers), experts_(experts), slots_(slots), eviction_(eviction) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, layers >= 0 && experts >= 1 && slots >= 1 && slots <= experts,
                    "expert cache of ", slots, " slots for ", experts, " experts per layer");
  slot_expert_.assign(static_cast<size_t>(layers * slots), -1);
  expert_slot_.assign(static_cast<size_t>(layers * experts), -1);
  last_use_.assign(static_cast<size_t>(layers * experts), 0);
  hits_.assign(static_cast<size_t>(layers * experts), 0);
  misses_.assign(static_cast<size_t>(layers * experts), 0);
  for (int64_t l = 0; l < layers; ++l)
    for (int s = 0; s < slots; ++s) {
      slot_expert_[static_cast<size_t>(l * slots + s)] = s;
      expert_slot_[at(l, s)] = s;
    }
}

int64_t ExpertCachePolicy::expert_in(int64_t layer, int slot) const {
  return slot_expert_[static_cast<size_t>(layer * slots_ + slot)];
}

int ExpertCachePolicy::slot_of(int64_t layer, int64_t expert) const { return expert_slot_[at(layer, expert)]; }

int ExpertCachePolicy::pick_victim(int64_t layer, const std::vector<bool>& protected_slot) const {
  int best = -1;
  auto key_less = [&](int a, int b) {  // true when slot a is the better victim
    const int64_t ea = expert_in(layer, a), eb = expert_in(layer, b);
    if (ea < 0 || eb < 0) return ea < 0 && eb >= 0;  // an empty slot first
    if (eviction_ == ExpertEviction::kFrequency) {
      const int64_t ua = hits_[at(layer, ea)] + misses_[at(layer, ea)], ub = hits_[at(layer, eb)] + misses_[at(layer, eb)];
      if (ua != ub) return ua < ub;
    }
    const int64_t ta = last_use_[at(layer, ea)], tb = last_use_[at(layer, eb)];
    return ta != tb ? ta < tb : a < b;
  };
  for (int s = 0; s < slots_; ++s)
    if (!protected_slot[static_cast<size_t>(s)] && (best < 0 || key_less(s, best))) best = s;
  STRATA_CHECK_KIND(ErrorKind::kInternal, best >= 0, "expert cache: no slot to evict in layer ", layer);
  return best;
}

std::vector<ExpertRound> ExpertCachePolicy::plan(int64_t layer, const std::vector<int64_t>& tokens) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, layer >= 0 && layer < layers_ && static_cast<int64_t>(tokens.size()) == experts_,
                    "expert cache plan for layer ", layer, " of ", layers_, " with ", tokens.size(), " of ", experts_,
                    " experts");
  std::vector<int64_t> resident, missing;
  for (int64_t e = 0; e < experts_; ++e) {
    if (tokens[static_cast<size_t>(e)] <= 0) continue;
    (slot_of(layer, e) >= 0 ? resident : missing).push_back(e);
  }
  std::vector<ExpertRound> rounds;
  if (resident.empty() && missing.empty()) return rounds;
  size_t next_miss = 0;
  while (rounds.empty() || next_miss < missing.size()) {
    ExpertRound r;
    std::vector<int64_t> chosen = rounds.empty() ? resident : std::vector<int64_t>{};
    const size_t fresh = std::min(missing.size() - next_miss, static_cast<size_t>(slots_) - chosen.size());
    std::vector<bool> protected_slot(static_cast<size_t>(slots_), false);
    for (int64_t e : chosen) protected_slot[static_cast<size_t>(slot_of(layer, e))] = true;
    const size_t first_miss = chosen.size();
    for (size_t i = 0; i < fresh; ++i) chosen.push_back(missing[next_miss + i]);
    next_miss += fresh;
    ++tick_;
    for (size_t i = 0; i < chosen.size(); ++i) {
      const int64_t e = chosen[i];
      const bool miss = i >= first_miss;
      if (miss) {
        const int s = pick_victim(layer, protected_slot);
        if (const int64_t old = expert_in(layer, s); old >= 0) expert_slot_[at(layer, old)] = -1;
        slot_expert_[static_cast<size_t>(layer * slots_ + s)] = e;
        expert_slot_[at(layer, e)] = s;
        protected_slot[static_cast<size_t>(s)] = true;
      }
      const int64_t n = tokens[static_cast<size_t>(e)];
      hits_[at(layer, e)] += miss ? n - 1 : n;
      misses_[at(layer, e)] += miss ? 1 : 0;
      total_hits_ += miss ? n - 1 : n;
      total_misses_ += miss ? 1 : 0;
      last_use_[at(layer, e)] = tick_;
    }
    // Ascending expert order inside a round: the step runs its experts in index order like the resident path.
    std::vector<size_t> order(chosen.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return chosen[a] < chosen[b]; });
    for (size_t i : order) {
      r.experts.push_back(chosen[i]);
      r.slots.push_back(slot_of(layer, chosen[i]));
      r.fetch.push_back(i >= first_miss);
    }
    rounds.push_back(std::move(r));
  }
  return rounds;
}

}  // namespace strata::offload
