// offload/residency.cpp: the placement policy of residency.h and the decode-rate estimate.
#include "offload/residency.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "runtime/error.h"

namespace strata::offload {
namespace {

constexpr int64_t kDirectAlign = 4096;     // O_DIRECT's alignment on the file systems we target
constexpr int64_t kDirectMin = 256 << 10;  // smaller reads go through the page cache (disk_reader.h)

const TierRule* rule_for(const ResidencyConfig& config, const std::string& name) {
  for (const TierRule& r : config.rules)
    if (glob_match(r.match, name)) return &r;
  return nullptr;
}

// One candidate layout: which unruled layer tensors stay resident, and the ring it needs.
struct Layout {
  bool feasible = false;
  std::vector<bool> resident;  // per item
  int64_t slot_bytes = 0;
  int slots = 0;
  int64_t streamed = 0;  // bytes per pass
};

}  // namespace

int64_t share_bytes(int64_t capacity, double percent) {
  return static_cast<int64_t>(std::floor(static_cast<double>(capacity) * (percent / 100.0)));
}

int64_t ResidencyConfig::device_budget_bytes(int64_t device_memory) const {
  if (device_budget >= 0) return device_budget;
  if (device_budget_percent > 0 && device_memory > 0) return share_bytes(device_memory, device_budget_percent);
  return -1;
}

const char* tier_name(Tier tier) {
  switch (tier) {
    case Tier::kDevice: return "device";
    case Tier::kHost: return "host";
    case Tier::kDisk: return "disk";
  }
  return "?";
}

const char* disk_io_name(DiskIo io) {
  switch (io) {
    case DiskIo::kAuto: return "auto";
    case DiskIo::kDirect: return "direct";
    case DiskIo::kBuffered: return "buffered";
  }
  return "?";
}

TensorGroup tensor_group(const TensorSlot& slot) {
  switch (slot.role) {
    case SlotRole::kEmbedding:
    case SlotRole::kHead: return TensorGroup::kGlobal;
    case SlotRole::kNorm:
    case SlotRole::kBias: return slot.per_layer ? TensorGroup::kNorm : TensorGroup::kGlobal;
    case SlotRole::kAttention: return TensorGroup::kAttention;
    case SlotRole::kRouter:
    case SlotRole::kExpert:
    case SlotRole::kMlp: return TensorGroup::kMlp;
  }
  return TensorGroup::kMlp;
}

int64_t slot_cost(int64_t bytes) {
  // Small tensors pack at 256 bytes (CUDA kernels' vector loads). Large ones may be read with
  // O_DIRECT (prefetcher.cpp lay_out_slots): a page to align the start, the file offset's place
  // inside its page, and the rounded end of the read.
  if (bytes < kDirectMin) return (bytes + 255) / 256 * 256;
  return (bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign + 3 * kDirectAlign;
}

bool glob_match(const std::string& pattern, const std::string& name) {
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = n;
    } else if (star != std::string::npos) {
      p = star + 1, n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string format_size(int64_t bytes, bool ceil) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (u < 4 && v >= 1024.0) v /= 1024.0, ++u;
  if (u == 0) return std::to_string(bytes) + " B";
  if (ceil) v = static_cast<double>(static_cast<int64_t>(v * 100.0 + 0.999999)) / 100.0;
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.2f %s", v, units[u]);
  return buf;
}

namespace {

int64_t align256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

Placement place_experts(const std::vector<TensorItem>& items, const ResidencyConfig& config, int64_t top_k) {
  Placement out;
  out.device_budget = config.device_budget;
  out.kv_reserve_bytes = std::max<int64_t>(0, config.kv_reserve_bytes);
  out.strategy = "experts cached";
  out.expert_eviction = config.expert_eviction;
  out.tiers.assign(items.size(), Tier::kDevice);
  STRATA_CHECK_KIND(ErrorKind::kConfig, config.rules.empty(), "offload.rules cannot be combined with expert "
                    "offload: with the experts cached, every other weight stays on the device; remove the rules");
  STRATA_CHECK_KIND(ErrorKind::kConfig, config.cold_tier != Tier::kDevice, "offload.cold_tier: device cannot hold "
                    "offloaded experts; set cold_tier: host (pinned copies) or disk (the mapped checkpoint)");
  out.expert_tier = config.cold_tier;
  std::map<std::pair<int64_t, int64_t>, int64_t> expert_cost;  // (layer, expert) -> its slot bytes
  std::map<int64_t, int64_t> held;                             // layer -> experts
  for (size_t i = 0; i < items.size(); ++i) {
    const TensorItem& it = items[i];
    if (it.expert < 0) {
      out.resident_bytes += it.bytes;
      continue;
    }
    out.tiers[i] = config.cold_tier;
    int64_t& cost = expert_cost[{it.layer, it.expert}];
    if (cost == 0) ++held[it.layer];
    cost += align256(it.bytes);
    out.expert_bytes += it.bytes;
  }
  out.pinned_bytes = out.resident_bytes;
  for (const auto& [key, cost] : expert_cost) out.expert_slot_bytes = std::max(out.expert_slot_bytes, cost);
  out.expert_layers = static_cast<int64_t>(held.size());
  for (const auto& [layer, n] : held) out.experts_held = std::max(out.experts_held, n);
  const int64_t need = std::min(std::max<int64_t>(top_k, 1), out.experts_held);
  const int64_t per_slot = out.expert_slot_bytes * out.expert_layers;  // one slot in every expert layer
  const int64_t base = out.pinned_bytes + out.kv_reserve_bytes;
  out.min_device_bytes = base + need * per_slot;
  const int64_t budget = config.device_budget;
  const int64_t fit = budget < 0 ? out.experts_held : std::max<int64_t>(0, (budget - base) / per_slot);
  const int64_t asked = config.experts_resident_per_layer;
  auto sizes = [&](int64_t slots) {
    return cat("the other weights ", format_size(out.pinned_bytes),
               out.kv_reserve_bytes > 0 ? cat(" + the KV reserve ", format_size(out.kv_reserve_bytes)) : std::string(),
               " + ", slots, " experts x ", out.expert_layers, " layers x ", format_size(out.expert_slot_bytes), " = ",
               format_size(base + slots * per_slot, true));
  };
  if (asked >= 0) {
    STRATA_CHECK_KIND(ErrorKind::kConfig, asked <= out.experts_held, "offload.experts.resident_per_layer ", asked,
                      " is more than the ", out.experts_held, " experts per layer this rank holds; use 1..",
                      out.experts_held);
    STRATA_CHECK_KIND(ErrorKind::kConfig, asked >= need, "offload.experts.resident_per_layer ", asked,
                      " is below the ", need, " experts a token is routed to (top-k): they run together, so each "
                      "layer needs at least ", need, " device slots; use ", need, "..", out.experts_held);
  }
  const int64_t slots = asked >= 0 ? asked : std::min(fit, out.experts_held);
  if (budget >= 0 && base + std::max(slots, need) * per_slot > budget) {
    STRATA_THROW(ErrorKind::kConfig, "device_budget ", format_size(budget), " cannot hold ",
                 sizes(std::max(slots, need)), "; a layer needs at least its top-k = ", need,
                 " experts on the device, so the minimum is ", format_size(out.min_device_bytes, true),
                 fit >= need ? cat(" and this budget holds at most ", std::min(fit, out.experts_held),
                                   " resident experts per layer (offload.experts.resident_per_layer)")
                             : std::string(),
                 ". Raise device_budget", fit >= need ? ", lower offload.experts.resident_per_layer" : "",
                 " or spread the experts over more ranks (parallel.expert)");
  }
  STRATA_CHECK_KIND(ErrorKind::kConfig, out.expert_tier == Tier::kDisk || config.host_budget < 0 ||
                                            out.expert_bytes <= config.host_budget,
                    "host_budget ", format_size(config.host_budget), " cannot hold the ", format_size(out.expert_bytes),
                    " of routed experts this rank fetches from pinned host memory; raise host_budget to at least ",
                    format_size(out.expert_bytes, true), ", or set cold_tier: disk to read them from the checkpoint");
  out.expert_slots = static_cast<int>(slots);
  return out;
}

}  // namespace

Placement place(const std::vector<TensorItem>& items, const ResidencyConfig& config, int64_t experts_per_token) {
  bool has_experts = false;
  int64_t total = std::max<int64_t>(0, config.kv_reserve_bytes);
  for (const TensorItem& it : items) {
    has_experts = has_experts || it.expert >= 0;
    total += it.bytes;
  }
  if (has_experts && (config.experts_resident_per_layer >= 0 || (config.device_budget >= 0 && total > config.device_budget)))
    return place_experts(items, config, experts_per_token);
  STRATA_CHECK_KIND(ErrorKind::kConfig, config.prefetch_depth >= 1 && config.prefetch_depth <= 64,
                    "offload.prefetch_depth must be 1..64, got ", config.prefetch_depth);
  Placement out;
  out.device_budget = config.device_budget;
  out.kv_reserve_bytes = std::max<int64_t>(0, config.kv_reserve_bytes);
  out.tiers.assign(items.size(), Tier::kDevice);
  std::vector<bool> candidate(items.size(), false);  // unruled layer matrices: placement decides
  std::map<int64_t, int64_t> ruled_slot;             // layer -> slot cost of rule-streamed tensors
  int64_t layers_lo = INT64_MAX, layers_hi = -1;
  for (size_t i = 0; i < items.size(); ++i) {
    const TensorItem& it = items[i];
    if (it.layer >= 0) layers_lo = std::min(layers_lo, it.layer), layers_hi = std::max(layers_hi, it.layer);
    if (const TierRule* r = rule_for(config, it.name)) {
      STRATA_CHECK_KIND(ErrorKind::kConfig, it.layer >= 0 || r->tier == Tier::kDevice, "offload rule '", r->match,
                        "' sends ", it.name, " to the ", tier_name(r->tier), " tier, but the embedding, final norm "
                        "and LM head stay on the device; narrow the rule to layer tensors (blk.*)");
      out.tiers[i] = r->tier;
      if (r->tier == Tier::kDevice) out.pinned_bytes += it.bytes;
      else ruled_slot[it.layer] += slot_cost(it.bytes);
    } else if (it.group == TensorGroup::kGlobal || it.group == TensorGroup::kNorm) {
      out.pinned_bytes += it.bytes;  // tiny or always used: streaming them costs more than it frees
    } else {
      candidate[i] = true;
    }
  }
  const int64_t n_layers = layers_hi < 0 ? 0 : layers_hi - layers_lo + 1;
  const int max_slots = static_cast<int>(std::min<int64_t>(config.prefetch_depth + 1, n_layers));
  const int64_t budget = config.device_budget;

  // Whole layers: a resident prefix of layers, every later layer streams in full.
  auto whole_layers = [&]() {
    Layout l;
    l.resident.assign(items.size(), false);
    std::map<int64_t, int64_t> layer_cost = ruled_slot, layer_free;
    for (size_t i = 0; i < items.size(); ++i)
      if (candidate[i]) layer_cost[items[i].layer] += slot_cost(items[i].bytes), layer_free[items[i].layer] += items[i].bytes;
    for (const auto& [layer, cost] : layer_cost) l.slot_bytes = std::max(l.slot_bytes, cost);
    l.slots = max_slots;
    int64_t room = budget - out.pinned_bytes - out.kv_reserve_bytes - l.slot_bytes * l.slots;
    l.feasible = room >= 0;
    std::map<int64_t, bool> layer_resident;
    for (const auto& [layer, bytes] : layer_free) {  // std::map: layer order
      const bool fits = room >= 0 && bytes <= room;
      layer_resident[layer] = fits;
      room = fits ? room - bytes : -1;  // keep the resident layers a prefix: the stream starts at one layer
    }
    for (size_t i = 0; i < items.size(); ++i)
      if (candidate[i]) {
        l.resident[i] = layer_resident[items[i].layer];
        if (!l.resident[i]) l.streamed += items[i].bytes;
      }
    return l;
  };
  // Attention resident in every layer, MLPs streamed: the slot holds an MLP only.
  auto attention_resident = [&]() {
    Layout l;
    l.resident.assign(items.size(), false);
    std::map<int64_t, int64_t> mlp_cost = ruled_slot, mlp_free;
    int64_t attention = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!candidate[i]) continue;
      if (items[i].group == TensorGroup::kAttention) {
        attention += items[i].bytes;
        l.resident[i] = true;
      } else {
        mlp_cost[items[i].layer] += slot_cost(items[i].bytes), mlp_free[items[i].layer] += items[i].bytes;
      }
    }
    for (const auto& [layer, cost] : mlp_cost) l.slot_bytes = std::max(l.slot_bytes, cost);
    l.slots = max_slots;
    int64_t room = budget - out.pinned_bytes - out.kv_reserve_bytes - attention - l.slot_bytes * l.slots;
    l.feasible = room >= 0 && attention > 0;
    std::map<int64_t, bool> layer_resident;
    for (const auto& [layer, bytes] : mlp_free) {
      const bool fits = room >= 0 && bytes <= room;
      layer_resident[layer] = fits;
      room = fits ? room - bytes : -1;
    }
    for (size_t i = 0; i < items.size(); ++i)
      if (candidate[i] && items[i].group != TensorGroup::kAttention) {
        l.resident[i] = layer_resident[items[i].layer];
        if (!l.resident[i]) l.streamed += items[i].bytes;
      }
    return l;
  };

  int64_t candidates = 0;
  for (size_t i = 0; i < items.size(); ++i)
    if (candidate[i]) candidates += items[i].bytes;
  const Layout whole = whole_layers();
  out.min_device_bytes = out.pinned_bytes + out.kv_reserve_bytes + whole.slot_bytes * whole.slots;
  int64_t ruled_ring = 0;
  for (const auto& [layer, cost] : ruled_slot) ruled_ring = std::max(ruled_ring, cost);
  ruled_ring *= std::min<int64_t>(max_slots, static_cast<int64_t>(ruled_slot.size()));

  Layout chosen;
  if (budget < 0 || out.pinned_bytes + out.kv_reserve_bytes + candidates + ruled_ring <= budget) {
    chosen.resident.assign(items.size(), true);
    out.strategy = ruled_slot.empty() ? "all resident" : "rules";
  } else {
    const Layout attn = attention_resident();
    if (!whole.feasible) {
      std::string kv = out.kv_reserve_bytes > 0 ? " + the KV reserve of " + format_size(out.kv_reserve_bytes) : "";
      STRATA_THROW(ErrorKind::kConfig, "device_budget ", format_size(budget), " cannot hold the pinned ",
                   format_size(out.pinned_bytes), kv, " + one layer of ", format_size(whole.slot_bytes), " x (",
                   whole.slots == config.prefetch_depth + 1
                       ? cat("prefetch_depth ", config.prefetch_depth, " + 1")
                       : cat(whole.slots, " streamed layers"),
                   ") slots; the minimum is ", format_size(out.min_device_bytes, true),
                   ". Raise device_budget, lower offload.prefetch_depth, or split the model over more ranks");
    }
    chosen = attn.feasible && attn.streamed < whole.streamed ? attn : whole;
    out.strategy = attn.feasible && attn.streamed < whole.streamed ? "attention resident" : "whole layers";
  }
  for (size_t i = 0; i < items.size(); ++i)
    if (candidate[i]) out.tiers[i] = chosen.resident[i] ? Tier::kDevice : config.cold_tier;

  // A host budget spills the later streamed tensors to the disk tier.
  int64_t host_left = config.host_budget;
  for (size_t i = 0; i < items.size(); ++i) {
    if (out.tiers[i] != Tier::kHost || candidate[i]) continue;
    STRATA_CHECK_KIND(ErrorKind::kConfig, host_left < 0 || items[i].bytes <= host_left, "offload rules put ",
                      items[i].name, " on the host tier but host_budget ", format_size(config.host_budget),
                      " is used up; raise host_budget or send more tensors to the disk tier");
    if (host_left >= 0) host_left -= items[i].bytes;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (out.tiers[i] != Tier::kHost || !candidate[i] || host_left < 0) continue;
    if (items[i].bytes <= host_left) host_left -= items[i].bytes;
    else out.tiers[i] = Tier::kDisk, host_left = 0;
  }

  std::map<int64_t, int64_t> slot_of_layer;
  for (size_t i = 0; i < items.size(); ++i) {
    const Tier t = out.tiers[i];
    if (t == Tier::kDevice) out.resident_bytes += items[i].bytes;
    else (t == Tier::kHost ? out.host_bytes : out.disk_bytes) += items[i].bytes;
    if (t != Tier::kDevice) slot_of_layer[items[i].layer] += slot_cost(items[i].bytes);
  }
  for (const auto& [layer, cost] : slot_of_layer) out.slot_bytes = std::max(out.slot_bytes, cost);
  out.streamed_layers = static_cast<int64_t>(slot_of_layer.size());
  out.slots = static_cast<int>(std::min<int64_t>(config.prefetch_depth + 1, out.streamed_layers));
  STRATA_CHECK_KIND(ErrorKind::kInternal, budget < 0 || out.device_bytes() <= budget, "placement uses ",
                    out.device_bytes(), " bytes of a ", budget, "-byte budget");
  return out;
}

DecodeEstimate estimate_decode(const Placement& p, const Ceilings& c, int64_t batch) {
  DecodeEstimate e;
  const double streamed = static_cast<double>(p.host_bytes + p.disk_bytes);
  const double t_device = c.device_gbs > 0 ? (static_cast<double>(p.resident_bytes) + streamed) / (c.device_gbs * 1e9) : 0;
  const double t_link = c.link_gbs > 0 ? streamed / (c.link_gbs * 1e9) : 0;
  const double t_disk = c.disk_gbs > 0 ? static_cast<double>(p.disk_bytes) / (c.disk_gbs * 1e9) : 0;
  e.step_s = std::max({t_device, t_link, t_disk});
  e.bound = e.step_s == t_disk && t_disk > 0 ? "disk" : e.step_s == t_link && t_link > 0 ? "host link" : "device memory";
  e.tokens_per_s = e.step_s > 0 ? static_cast<double>(batch) / e.step_s : 0;
  return e;
}

}  // namespace strata::offload
