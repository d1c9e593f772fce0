// parallel/plan_report.cpp: formatting of describe(). Shards of a stage's layers share shapes, so they
// are shown once per tensor kind with the layer range, which keeps an 80-layer rank to a dozen lines.
#include "parallel/plan_report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "parallel/byte_size.h"
#include "runtime/error.h"

namespace strata::parallel {
namespace {

std::string range(int64_t begin, int64_t count) {  // [begin, begin+count) as "b-e"
  if (count <= 0) return "none";
  return count == 1 ? std::to_string(begin) : cat(begin, "-", begin + count - 1);
}

std::string members(const std::vector<int>& ranks) {
  if (ranks.size() > 2 && ranks.back() - ranks.front() + 1 == static_cast<int>(ranks.size()))
    return cat("[", ranks.front(), "-", ranks.back(), "]");
  std::string out;
  for (int r : ranks) {
    if (!out.empty()) out += ',';
    out += std::to_string(r);
  }
  return "[" + out + "]";
}

std::string pad(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// A shard's name without its layer, routed experts' with '#' for the expert ("ffn_gate.#.weight").
std::string shard_kind(const ShardSlice& s) {
  if (s.expert >= 0 && s.slot != nullptr) return std::string(s.slot->name);
  return s.layer >= 0 ? s.name.substr(s.name.find('.', 4) + 1) : s.name;
}

// One line per group of shards that differ only by layer (and expert): "blk.{0-39}.attn_q.weight",
// "blk.{0-39}.ffn_gate.{0-7}.weight". A rank's experts come in layer order, experts ascending within one.
void shard_lines(std::ostringstream& out, const RankPartition& r) {
  struct Group {
    const ShardSlice* first;
    int64_t layer_first, layer_last, n, bytes;
    int64_t expert_last = -1, cursor = -1;  // experts: the first layer's last expert, the last one merged
  };
  std::vector<Group> groups;
  for (const auto& s : r.shards) {
    const std::string kind = shard_kind(s);
    bool merged = false;
    for (auto& g : groups) {
      const ShardSlice& f = *g.first;
      if (f.layer < 0 || s.layer < 0 || f.tier != s.tier || f.local_shape != s.local_shape || f.offset != s.offset ||
          shard_kind(f) != kind)
        continue;
      if (s.expert >= 0) {
        const bool next_expert = s.layer == g.layer_last && s.expert == g.cursor + 1 &&
                                 (g.layer_first == g.layer_last || s.expert <= g.expert_last);
        const bool next_layer = s.layer == g.layer_last + 1 && s.expert == f.expert && g.cursor == g.expert_last;
        if (!next_expert && !next_layer) continue;
        if (g.layer_first == s.layer) g.expert_last = s.expert;
        g.cursor = s.expert;
      } else if (s.layer != g.layer_last + 1) {
        continue;
      }
      g.layer_last = s.layer, ++g.n, g.bytes += s.bytes, merged = true;
      break;
    }
    if (!merged) groups.push_back(Group{&s, s.layer, s.layer, 1, s.bytes, s.expert, s.expert});
  }
  for (const auto& g : groups) {
    const ShardSlice& s = *g.first;
    std::string name = s.name;
    std::string kind = shard_kind(s);
    if (s.expert >= 0)
      kind.replace(kind.find('#'), 1,
                   g.expert_last == s.expert ? std::to_string(s.expert) : cat("{", s.expert, "-", g.expert_last, "}"));
    if (s.layer >= 0)
      name = cat("blk.", g.layer_first == g.layer_last ? std::to_string(g.layer_first)
                                                       : cat("{", g.layer_first, "-", g.layer_last, "}"), ".", kind);
    std::string slice = tp_split_name(s.kind);
    if (s.kind != TpSplit::kReplicated && s.kind != TpSplit::kExpert) slice += cat(" ", range(s.offset, s.count));
    out << "    " << pad(name, 30) << " " << pad(slice, 18) << " " << pad(shape_str(s.local_shape), 14) << " of "
        << pad(shape_str(s.full_shape), 14) << " " << pad(dtype_name(s.dtype), 5) << " " << pad(tier_name(s.tier), 7)
        << (g.n > 1 ? cat(g.n, " x ", format_bytes(g.bytes / g.n), " = ") : std::string()) << format_bytes(g.bytes)
        << "\n";
  }
}

}  // namespace

std::string describe(const Plan& plan, const ModelConfig& c, const Partition& p) {
  std::ostringstream out;
  const auto& par = plan.parallel;
  const auto& off = plan.offload;
  out << "plan " << plan.source << "\n";
  out << "  model   " << (plan.model.path.empty() ? "" : plan.model.path + " ")
      << (plan.model.shape.empty() ? "" : "(shape " + plan.model.shape + ") ") << c.arch << ", " << c.n_layers
      << " layers, hidden " << c.hidden << ", heads " << c.n_heads << " (kv " << c.n_kv_heads << ", head_dim "
      << c.head_dim << "), ffn " << c.ffn << ", vocab " << c.vocab_size << (c.tied_embeddings ? ", tied embeddings" : "")
      << "\n";
  out << "  weights " << dtype_name(p.dtype) << (p.dtype_source.empty() ? "" : " (" + p.dtype_source + ")") << ", "
      << format_bytes(p.model_bytes) << " unsharded\n";
  out << "  world   " << p.layout.world_size() << " ranks = data " << par.data << " x pipeline " << par.pipeline
      << (par.expert > 1 ? cat(" x expert ", par.expert) : std::string()) << " x tensor " << par.tensor
      << (par.expert > 1 ? cat(" (rank = ((dp * ", par.pipeline, " + pp) * ", par.expert, " + ep) * ", par.tensor)
                         : cat(" (rank = (dp * ", par.pipeline, " + pp) * ", par.tensor))
      << " + tp); "
      << (par.interleaved ? "interleaved pipeline schedule" : cat("micro-batches ", plan.micro_batches())) << "\n";
  out << "  comm    " << comm_backend_name(plan.comm.backend) << ", overlap_chunks " << plan.comm.overlap_chunks
      << " of >= " << plan.comm.overlap_min_tokens << " tokens"
      << ", timeout " << plan.comm.timeout_s << " s\n";
  out << "  stages  " << (par.stages.empty() ? "balanced" : "explicit") << ":";
  for (size_t i = 0; i < p.stages.size(); ++i)
    out << (i ? "," : "") << " " << i << ": layers " << range(p.stages[i].layer_begin, p.stages[i].size()) << " ("
        << p.stages[i].size() << ")";
  out << "\n";
  out << "  heads   " << c.n_heads / par.tensor << " query heads per rank; KV heads "
      << (p.kv_replication > 1 ? cat("replicated: each of the ", c.n_kv_heads, " on ", p.kv_replication, " ranks")
                               : cat(c.n_kv_heads / par.tensor, " per rank"))
      << "\n";
  if (c.moe.enabled()) {
    const int64_t group = int64_t{par.tensor} * par.expert;
    out << "  experts " << c.moe.n_experts << " per expert layer (top-" << c.moe.n_used << ", " << c.moe.expert_ffn
        << " wide), " << c.moe.n_experts / group << " per rank over each stage's tensor x expert = " << group
        << " ranks" << (c.moe.shared_ffn > 0 ? cat("; shared expert ", c.moe.shared_ffn, " wide, ",
                                                  c.moe.shared_ffn / group, " columns per rank")
                                            : std::string())
        << "; partial outputs summed over the group (all-reduce)\n";
  }
  out << "  vocab   " << p.vocab_size << ", padded to " << p.vocab_padded << " (" << p.vocab_per_rank
      << " rows per rank; shards hold real rows only)\n";
  out << "  offload device_budget " << off.device_budget.str() << ", host_budget " << off.host_budget.str()
      << ", cold_tier " << tier_name(off.cold_tier) << ", prefetch_depth " << off.prefetch_depth
      << ", batch_wait_ms " << off.batch_wait_ms << ", " << off.rules.size() << " rules"
      << (c.moe.enabled() ? cat(", experts resident_per_layer ", off.experts_resident_per_layer < 0 ? std::string("from the budget")
                                                                    : std::to_string(off.experts_resident_per_layer),
                                " (", offload::eviction_name(off.expert_eviction), ")")
                          : std::string()) << (off.device_budget.percent > 0 ? " (a share is resolved per device at startup)" : "")
      << "\n\n";

  out << "  rank  dp  pp  tp  layers        q heads   kv heads  ffn             vocab           device      host        "
         "disk        staging" << (c.moe.enabled() ? "     ep  experts" : "") << "\n";
  for (const auto& r : p.ranks) {
    char line[256];
    std::snprintf(line, sizeof line, "  %4d %3d %3d %3d  %-12s  %-8s  %-8s  %-14s  %-14s  %-10s  %-10s  %-10s  %s\n",
                  r.rank, r.dp, r.pp, r.tp, range(r.layer_begin, r.layer_end - r.layer_begin).c_str(),
                  range(r.shard.q_head_begin, r.shard.q_heads).c_str(), range(r.shard.kv_head_begin, r.shard.kv_heads).c_str(),
                  range(r.shard.ffn_begin, r.shard.ffn_count).c_str(),
                  (r.shard.first_stage || r.shard.last_stage) ? range(r.shard.vocab_begin, r.shard.vocab_count).c_str() : "-",
                  format_bytes(r.bytes.device).c_str(), format_bytes(r.bytes.host).c_str(),
                  format_bytes(r.bytes.disk).c_str(), format_bytes(r.bytes.staging).c_str());
    out << line;
    if (c.moe.enabled()) {  // the line ends in '\n'; the expert columns go before it
      out.seekp(-1, std::ios_base::cur);
      const int staging_width = static_cast<int>(format_bytes(r.bytes.staging).size());
      out << std::string(static_cast<size_t>(std::max(2, 11 - staging_width)), ' ') << r.ep << "  "
          << range(r.shard.expert_begin, r.shard.expert_count) << "\n";
    }
  }
  out << "\n";
  const int replica_size = par.pipeline * par.expert * par.tensor;
  for (const auto& r : p.ranks) {
    if (r.dp > 0) continue;  // replicas repeat replica 0 rank for rank
    out << "  rank " << r.rank << " (dp " << r.dp << ", pp " << r.pp << (par.expert > 1 ? cat(", ep ", r.ep) : "")
        << ", tp " << r.tp << "): layers " << range(r.layer_begin, r.layer_end - r.layer_begin)
        << (r.shard.first_stage ? ", embedding" : "") << (r.shard.last_stage ? ", final norm + LM head" : "")
        << (c.moe.enabled() ? cat(", experts ", range(r.shard.expert_begin, r.shard.expert_count)) : "")
        << "; tp group " << members(r.tp_group) << ", pp chain " << members(r.pp_chain)
        << (par.expert > 1 ? cat(", expert group ", members(r.expert_group)) : "") << "\n";
    shard_lines(out, r);
    out << "    weights " << format_bytes(r.bytes.weights()) << ": device " << format_bytes(r.bytes.device) << ", host "
        << format_bytes(r.bytes.host) << ", disk " << format_bytes(r.bytes.disk) << "; staging "
        << format_bytes(r.bytes.staging) << "; device budget "
        << (r.device_budget < 0 ? std::string("unlimited") : format_bytes(r.device_budget)) << " (minimum to stream "
        << format_bytes(r.min_device_bytes) << ")\n";
    if (r.expert_slots > 0)
      out << "    experts cached: " << r.expert_slots << " of " << r.shard.expert_count << " per layer x "
          << r.expert_layers << " layers on the device (" << format_bytes(r.expert_resident_bytes) << " resident, "
          << format_bytes(r.expert_cache_bytes) << " of slots), " << format_bytes(r.expert_streamed_bytes)
          << (r.expert_tier == Tier::kDisk
                  ? cat(" streamed from the mapped checkpoint when routed to\n")
                  : cat(" streamed from pinned host memory when routed to (every expert has a host copy: ",
                        format_bytes(r.expert_resident_bytes + r.expert_streamed_bytes), ")\n"));
  }
  if (par.data > 1)
    out << "  ranks " << replica_size << "-" << p.layout.world_size() - 1 << " (replicas 1-" << par.data - 1
        << ") hold the same shards as the rank " << "of replica 0 with the same (pp, tp)\n";
  const int64_t summed = p.totals.weights();
  out << "\n  totals  device " << format_bytes(p.totals.device) << ", host " << format_bytes(p.totals.host) << ", disk "
      << format_bytes(p.totals.disk) << ", staging " << format_bytes(p.totals.staging) << "\n";
  out << "          weights summed over ranks " << format_bytes(summed) << " = " << par.data << " x model "
      << format_bytes(p.model_bytes) << " + " << format_bytes(summed - par.data * p.model_bytes)
      << " held more than once (norms on every TP rank"
      << (p.kv_replication > 1 ? ", replicated KV heads" : "")
      << (c.tied_embeddings && par.pipeline > 1 ? ", the head's copy of tied embeddings" : "") << ")\n";
  return out.str();
}

}  // namespace strata::parallel
