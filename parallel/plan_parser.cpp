// parallel/plan_parser.cpp: the only file that includes yaml-cpp. Walks the document once, checking
// every key and type against the schema of configs/README.md, and records where each field is written
// so that later checks against the model can point at the line to change.
#include "parallel/plan_parser.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "parallel/byte_size.h"
#include "runtime/error.h"
#include "runtime/kv_cache.h"
#include "runtime/model_presets.h"

namespace strata::parallel {
namespace {

// model.dtype's choices: the float types and every block-quantized one.
std::vector<std::string> model_dtype_names() {
  std::vector<std::string> names = {"f32", "f16", "bf16"};
  for (DType d : quantized_dtypes()) names.push_back(dtype_name(d));
  return names;
}

SourceLoc loc_of(const YAML::Mark& mark) {
  if (mark.is_null()) return SourceLoc{};
  return SourceLoc{mark.line + 1, mark.column + 1};
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

const char* node_kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    default: return "a value";
  }
}

// What the user wrote, for "got '...'" in messages.
std::string shown(const YAML::Node& node) {
  if (node.IsScalar()) return cat("'", node.Scalar(), "'");
  return node_kind(node);
}

std::optional<int64_t> to_int(const std::string& s) {
  int64_t v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || p != end || s.empty()) return std::nullopt;
  return v;
}

// Walks one document. Each get_* reads one field, records its location, and reports a diagnostic
// (never throws) when the value has the wrong type or range.
class PlanReader {
 public:
  explicit PlanReader(ParsedPlan& out) : out_(out), plan_(out.plan) {}

  void read(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) {
      error("", SourceLoc{1, 1},
            "the plan is empty; write at least model.path and parallel sizes (see configs/README.md)");
      return;
    }
    if (!root.IsMap()) {
      error("", loc_of(root.Mark()), cat("a plan is a map of sections (model, parallel, offload, comm, serve, speculative), got ",
                                         node_kind(root)));
      return;
    }
    for_each_key(root, "", {"model", "parallel", "offload", "comm", "serve", "speculative"},
                 [&](const std::string& key, const YAML::Node& value) {
                   if (key == "model") read_model(value);
                   else if (key == "parallel") read_parallel(value);
                   else if (key == "offload") read_offload(value);
                   else if (key == "comm") read_comm(value);
                   else if (key == "serve") read_serve(value);
                   else read_speculative(value);
                 });
    // A sequence's next drafts need its last verdict, which an interleaved pipeline has not yet.
    if (plan_.parallel.interleaved && plan_.speculative.method != "off")
      error("speculative.method", plan_.locations["speculative.method"],
            "speculative decoding does not work with parallel.schedule: interleaved; use the default schedule or "
            "method: off");
  }

 private:
  template <typename Fn>
  void for_each_key(const YAML::Node& map, const std::string& path, std::vector<std::string> valid, Fn&& fn) {
    std::set<std::string> seen;
    for (const auto& entry : map) {  // by value from the iterator: it->first would dangle
      const YAML::Node key_node = entry.first;
      const YAML::Node value = entry.second;
      if (!key_node.IsScalar()) {
        error(path, loc_of(key_node.Mark()), cat("keys must be plain names, got ", node_kind(key_node)));
        continue;
      }
      const std::string key = key_node.Scalar();
      const std::string field = path.empty() ? key : path + "." + key;
      const std::string where = path.empty() ? "at the top level" : "in " + path;
      if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
        const std::string near = nearest_name(key, valid);
        error(field, loc_of(key_node.Mark()),
              near.empty() ? cat("unknown key '", key, "' ", where, "; valid keys: ", join(valid))
                           : cat("unknown key '", key, "' ", where, " (did you mean '", near, "'?)"));
        continue;
      }
      if (!seen.insert(key).second) {
        error(field, loc_of(key_node.Mark()),
              cat("duplicate key '", key, "' ", where, "; YAML keeps only one of them, so delete the other"));
        continue;
      }
      // Sections point at their key; values point at themselves, where the fix is typed.
      plan_.locations[field] = loc_of(value.IsScalar() ? value.Mark() : key_node.Mark());
      fn(key, value);
    }
  }

  bool expect_map(const YAML::Node& node, const std::string& field, const char* keys) {
    if (node.IsMap()) return true;
    if (node.IsNull()) return false;  // "offload:" with nothing under it: all defaults
    error(field, loc_of(node.Mark()), cat(field, " must be a map (", keys, "), got ", shown(node)));
    return false;
  }

  std::optional<int64_t> get_int(const YAML::Node& node, const std::string& field, int64_t lo, int64_t hi) {
    std::optional<int64_t> v = node.IsScalar() ? to_int(node.Scalar()) : std::nullopt;
    if (v && *v >= lo && *v <= hi) return v;
    std::string want = lo == 1 ? "a positive integer" : lo == 0 ? "a non-negative integer" : cat("an integer >= ", lo);
    if (v && *v > hi) want = cat("at most ", hi);  // an integer, just too large
    error(field, loc_of(node.Mark()), cat(field, " must be ", want, ", got ", shown(node)));
    return std::nullopt;
  }

  void set_int(int& dst, const YAML::Node& node, const std::string& field, int64_t lo = 1, int64_t hi = INT32_MAX) {
    if (auto v = get_int(node, field, lo, hi)) dst = static_cast<int>(*v);
  }

  std::optional<std::string> get_string(const YAML::Node& node, const std::string& field) {
    if (node.IsScalar() && !node.Scalar().empty()) return node.Scalar();
    error(field, loc_of(node.Mark()), cat(field, " must be a non-empty string, got ", shown(node)));
    return std::nullopt;
  }

  // One of `choices`; suggests the nearest on a typo.
  std::optional<std::string> get_choice(const YAML::Node& node, const std::string& field,
                                        const std::vector<std::string>& choices) {
    if (node.IsScalar() && std::find(choices.begin(), choices.end(), node.Scalar()) != choices.end())
      return node.Scalar();
    std::string msg = cat(field, " must be one of ", join(choices), ", got ", shown(node));
    if (node.IsScalar()) {
      const std::string near = nearest_name(node.Scalar(), choices);
      if (!near.empty()) msg += cat(" (did you mean '", near, "'?)");
    }
    error(field, loc_of(node.Mark()), msg);
    return std::nullopt;
  }

  std::optional<Tier> get_tier(const YAML::Node& node, const std::string& field, bool allow_device) {
    std::vector<std::string> choices = {"host", "disk"};
    if (allow_device) choices.insert(choices.begin(), "device");
    auto s = get_choice(node, field, choices);
    if (!s) return std::nullopt;
    return *s == "device" ? Tier::kDevice : *s == "host" ? Tier::kHost : Tier::kDisk;
  }

  Budget get_budget(const YAML::Node& node, const std::string& field, bool allow_percent) {
    Budget b;
    if (node.IsScalar()) {
      if (auto bytes = parse_byte_size(node.Scalar()); bytes && *bytes > 0) {
        b.bytes = *bytes;
        return b;
      }
      if (auto pct = parse_percent(node.Scalar()); pct && allow_percent) {
        b.percent = *pct;
        return b;
      }
    }
    error(field, loc_of(node.Mark()),
          cat(field, " must be a size such as 6GiB or 512MiB", allow_percent ? " or a share such as \"40%\"" : "",
              ", got ", shown(node)));
    return b;
  }

  // "0-11", "3", "0-3, 8-11", 7, or a list of those; inclusive ranges.
  std::optional<std::vector<int64_t>> get_index_set(const YAML::Node& node, const std::string& field,
                                                    const char* what) {
    std::vector<int64_t> out;
    auto bad = [&](const YAML::Node& at) {
      error(field, loc_of(at.Mark()),
            cat(field, ": ", shown(at), " is not a ", what, " set; write a range \"12-31\" (first-last, inclusive), ",
                "a number, or a list of those"));
    };
    auto add_text = [&](const YAML::Node& at) {
      std::stringstream parts(at.Scalar());
      std::string part;
      bool any = false;
      while (std::getline(parts, part, ',')) {
        part.erase(std::remove_if(part.begin(), part.end(), [](char c) { return c == ' ' || c == '\t'; }),
                   part.end());
        const size_t dash = part.find('-', 1);
        auto first = to_int(part.substr(0, dash));
        auto last = dash == std::string::npos ? first : to_int(part.substr(dash + 1));
        if (!first || !last || *first < 0 || *last < *first || *last - *first > 1'000'000) return false;
        for (int64_t i = *first; i <= *last; ++i) out.push_back(i);
        any = true;
      }
      return any;
    };
    if (node.IsScalar()) {
      if (!add_text(node)) return bad(node), std::nullopt;
    } else if (node.IsSequence() && node.size() > 0) {
      for (const auto& item : node)
        if (!item.IsScalar() || !add_text(item)) return bad(item), std::nullopt;
    } else {
      return bad(node), std::nullopt;
    }
    return out;
  }

  void read_model(const YAML::Node& node) {
    if (!expect_map(node, "model", "path, mmproj, dtype, shape")) return;
    for_each_key(node, "model", {"path", "mmproj", "dtype", "shape"}, [&](const std::string& key, const YAML::Node& v) {
      const std::string field = "model." + key;
      if (key == "path") {
        if (auto s = get_string(v, field)) plan_.model.path = *s;
      } else if (key == "mmproj") {
        if (auto s = get_string(v, field)) plan_.model.mmproj = *s;
      } else if (key == "dtype") {
        if (auto s = get_choice(v, field, model_dtype_names())) plan_.model.dtype = dtype_from_name(*s);
      } else {
        auto s = get_string(v, field);
        if (!s) return;
        const auto names = model_preset_names();
        if (std::find(names.begin(), names.end(), *s) == names.end()) {
          const std::string near = nearest_name(*s, names);
          error(field, loc_of(v.Mark()),
                cat("model.shape '", *s, "' is not a known shape", near.empty() ? "" : " (did you mean '" + near + "'?)",
                    "; known shapes: ", join(names)));
          return;
        }
        plan_.model.shape = *s;
      }
    });
  }

  void read_parallel(const YAML::Node& node) {
    if (!expect_map(node, "parallel", "tensor, pipeline, data, expert, micro_batches, schedule, stages")) return;
    auto& p = plan_.parallel;
    for_each_key(node, "parallel", {"tensor", "pipeline", "data", "expert", "micro_batches", "schedule", "stages"},
                 [&](const std::string& key, const YAML::Node& v) {
                   const std::string field = "parallel." + key;
                   if (key == "tensor") set_int(p.tensor, v, field, 1, 4096);
                   else if (key == "pipeline") set_int(p.pipeline, v, field, 1, 4096);
                   else if (key == "data") set_int(p.data, v, field, 1, 65536);
                   else if (key == "expert") set_int(p.expert, v, field, 1, 4096);
                   else if (key == "micro_batches") set_int(p.micro_batches, v, field, 1, 4096);
                   else if (key == "schedule") {
                     if (auto c = get_choice(v, field, {"steps", "interleaved"})) p.interleaved = *c == "interleaved";
                   }
                   else read_stages(v);
                 });
  }

  void read_stages(const YAML::Node& node) {
    if (!node.IsSequence() || node.size() == 0) {
      error("parallel.stages", loc_of(node.Mark()),
            cat("parallel.stages must be a list with one entry per pipeline stage, e.g. [{layers: \"0-11\"}, ",
                "{layers: \"12-31\"}], got ", shown(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string field = cat("parallel.stages[", i, "]");
      plan_.locations[field] = loc_of(item.Mark());
      StageSpec stage;
      stage.loc = loc_of(item.Mark());
      std::optional<std::vector<int64_t>> layers;
      if (item.IsMap()) {  // {layers: "0-11"}
        bool found = false;
        for_each_key(item, field, {"layers"}, [&](const std::string&, const YAML::Node& v) {
          found = true;
          layers = get_index_set(v, field + ".layers", "layer");
        });
        if (!found && item.size() == 0)
          error(field, stage.loc, cat(field, " needs layers, e.g. {layers: \"0-11\"}"));
      } else {  // shorthand: "0-11" or [0, 1, 2]
        layers = get_index_set(item, field, "layer");
      }
      if (layers) stage.layers = std::move(*layers);
      plan_.parallel.stages.push_back(std::move(stage));
    }
  }

  void read_offload(const YAML::Node& node) {
    if (!expect_map(node, "offload",
                    "device_budget, host_budget, cold_tier, prefetch_depth, batch_wait_ms, rules, per_rank, experts"))
      return;
    auto& o = plan_.offload;
    for_each_key(node, "offload",
                 {"device_budget", "host_budget", "cold_tier", "prefetch_depth", "batch_wait_ms", "rules", "per_rank",
                  "experts"},
                 [&](const std::string& key, const YAML::Node& v) {
                   const std::string field = "offload." + key;
                   if (key == "device_budget") o.device_budget = get_budget(v, field, true);
                   else if (key == "host_budget") o.host_budget = get_budget(v, field, false);
                   else if (key == "cold_tier") {
                     if (auto t = get_tier(v, field, false)) o.cold_tier = *t;
                   } else if (key == "prefetch_depth") set_int(o.prefetch_depth, v, field, 0, 64);
                   else if (key == "batch_wait_ms") read_batch_wait(v, field);
                   else if (key == "rules") read_rules(v);
                   else if (key == "experts") read_experts(v);
                   else read_per_rank(v);
                 });
  }

  // offload.experts: {resident_per_layer: N, eviction: lru|frequency}. Whether N suits the model (at
  // least its top-k, at most the experts a rank holds, within the budget) is offload::place's check.
  void read_experts(const YAML::Node& node) {
    if (!expect_map(node, "offload.experts", "resident_per_layer, eviction")) return;
    for_each_key(node, "offload.experts", {"resident_per_layer", "eviction"},
                 [&](const std::string& key, const YAML::Node& v) {
                   const std::string field = "offload.experts." + key;
                   if (key == "resident_per_layer") {
                     if (auto n = get_int(v, field, 1, 1 << 20)) plan_.offload.experts_resident_per_layer = *n;
                   } else if (auto s = get_string(v, field)) {
                     if (*s == "lru") plan_.offload.expert_eviction = offload::ExpertEviction::kLru;
                     else if (*s == "frequency") plan_.offload.expert_eviction = offload::ExpertEviction::kFrequency;
                     else error(field, loc_of(v.Mark()), cat(field, " must be lru or frequency, got ", shown(v)));
                   }
                 });
  }

  // A latency cost paid on every held decode step, so it is bounded: a second is already absurd.
  void read_batch_wait(const YAML::Node& v, const std::string& field) {
    char* end = nullptr;
    const std::string s = v.IsScalar() ? v.Scalar() : "";
    const double ms = s.empty() ? -1 : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !(ms >= 0) || !(ms <= 1000))
      error(field, loc_of(v.Mark()),
            cat(field, " must be milliseconds in [0, 1000] (0 turns the wait off), got ", shown(v)));
    else
      plan_.offload.batch_wait_ms = ms;
  }

  void read_rules(const YAML::Node& node) {
    if (!node.IsSequence()) {
      error("offload.rules", loc_of(node.Mark()),
            cat("offload.rules must be a list such as [{match: \"blk.*.ffn_*\", tier: host}], got ", shown(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string field = cat("offload.rules[", i, "]");
      plan_.locations[field] = loc_of(item.Mark());
      if (!expect_map(item, field, "match, tier")) {
        if (item.IsNull()) error(field, loc_of(item.Mark()), cat(field, " is empty; give match and tier"));
        continue;
      }
      TierRule rule;
      rule.loc = loc_of(item.Mark());
      bool has_match = false, has_tier = false;
      for_each_key(item, field, {"match", "tier"}, [&](const std::string& key, const YAML::Node& v) {
        if (key == "match") {
          if (auto s = get_string(v, field + ".match")) rule.match = *s, has_match = true;
        } else if (auto t = get_tier(v, field + ".tier", true)) {
          rule.tier = *t, has_tier = true;
        }
      });
      if (!has_match || !has_tier) {
        if (!plan_.locations.count(field + (has_match ? ".tier" : ".match")))  // missing, not malformed
          error(field, rule.loc, cat(field, " needs both match (a tensor-name glob) and tier (device|host|disk)"));
        continue;
      }
      plan_.offload.rules.push_back(std::move(rule));
    }
  }

  void read_per_rank(const YAML::Node& node) {
    if (!node.IsSequence()) {
      error("offload.per_rank", loc_of(node.Mark()),
            cat("offload.per_rank must be a list such as [{ranks: \"4-7\", device_budget: 20GiB}], got ", shown(node)));
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string field = cat("offload.per_rank[", i, "]");
      plan_.locations[field] = loc_of(item.Mark());
      if (!expect_map(item, field, "ranks, device_budget, host_budget")) continue;
      RankBudget rb;
      rb.loc = loc_of(item.Mark());
      for_each_key(item, field, {"ranks", "device_budget", "host_budget"},
                   [&](const std::string& key, const YAML::Node& v) {
                     const std::string f = field + "." + key;
                     if (key == "ranks") {
                       if (auto set = get_index_set(v, f, "rank"))
                         for (int64_t r : *set) rb.ranks.push_back(static_cast<int>(std::min<int64_t>(r, INT32_MAX)));
                     } else if (key == "device_budget") {
                       rb.device_budget = get_budget(v, f, true);
                     } else {
                       rb.host_budget = get_budget(v, f, false);
                     }
                   });
      if (rb.ranks.empty()) {
        if (!plan_.locations.count(field + ".ranks"))
          error(field, rb.loc, cat(field, " needs ranks, e.g. ranks: \"4-7\""));
        continue;
      }
      plan_.offload.per_rank.push_back(std::move(rb));
    }
  }

  void read_comm(const YAML::Node& node) {
    if (!expect_map(node, "comm", "backend, overlap_chunks, overlap_min_tokens, timeout_s")) return;
    auto& c = plan_.comm;
    for_each_key(node, "comm", {"backend", "overlap_chunks", "overlap_min_tokens", "timeout_s"},
                 [&](const std::string& key, const YAML::Node& v) {
      const std::string field = "comm." + key;
      if (key == "backend") {
        if (auto s = get_choice(v, field, {"auto", "mpi", "nccl"}))
          c.backend = *s == "mpi" ? CommBackend::kMpi : *s == "nccl" ? CommBackend::kNccl : CommBackend::kAuto;
      } else if (key == "overlap_chunks") {
        set_int(c.overlap_chunks, v, field, 1, 64);
      } else if (key == "overlap_min_tokens") {
        set_int(c.overlap_min_tokens, v, field, 1, 1 << 20);
      } else {
        char* end = nullptr;
        const std::string s = v.IsScalar() ? v.Scalar() : "";
        const double t = s.empty() ? 0 : std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size() || !(t > 0) || !std::isfinite(t))
          error(field, loc_of(v.Mark()), cat(field, " must be a positive number of seconds, got ", shown(v)));
        else
          c.timeout_s = t;
      }
    });
  }

  void read_serve(const YAML::Node& node) {
    if (!expect_map(node, "serve", "port, max_batch_tokens, max_seqs, kv_blocks, kv_budget, kv_cache_dtype, block_size, "
                    "max_queue")) return;
    auto& s = plan_.serve;
    for_each_key(node, "serve", {"port", "max_batch_tokens", "max_seqs", "kv_blocks", "kv_budget", "kv_cache_dtype",
                                 "block_size", "max_queue"},
                 [&](const std::string& key, const YAML::Node& v) {
                   const std::string field = "serve." + key;
                   if (key == "port") set_int(s.port, v, field, 1, 65535);
                   else if (key == "max_batch_tokens") {
                     if (auto n = get_int(v, field, 1, INT32_MAX)) s.max_batch_tokens = *n;
                   } else if (key == "max_seqs") set_int(s.max_seqs, v, field);
                   else if (key == "kv_blocks") {
                     if (auto n = get_int(v, field, 1, INT32_MAX)) s.kv_blocks = *n;
                   } else if (key == "kv_budget") s.kv_budget = get_budget(v, field, true);
                   else if (key == "kv_cache_dtype") {
                     if (auto name = get_string(v, field)) {
                       try {
                         s.kv_cache_dtype = parse_kv_cache_dtype(*name, field);
                       } catch (const Error& e) {
                         error(field, loc_of(v.Mark()), e.what());
                       }
                     }
                   } else if (key == "block_size") {
                     auto n = get_int(v, field, 1, 4096);
                     if (n && (*n & (*n - 1)) != 0)
                       error(field, loc_of(v.Mark()), cat(field, " must be a power of two (8, 16, 32...), got ", *n));
                     else if (n)
                       s.block_size = static_cast<int>(*n);
                   } else set_int(s.max_queue, v, field);
                 });
    if (plan_.locations.count("serve.kv_blocks") && plan_.locations.count("serve.kv_budget"))
      error("serve.kv_budget", plan_.locations["serve.kv_budget"],
            "serve.kv_blocks and serve.kv_budget both size the KV cache; keep one of them");
  }

  void read_speculative(const YAML::Node& node) {
    if (!expect_map(node, "speculative", "method, tokens, ngram_min, ngram_max, draft_model")) return;
    auto& s = plan_.speculative;
    for_each_key(node, "speculative", {"method", "tokens", "ngram_min", "ngram_max", "draft_model"},
                 [&](const std::string& key, const YAML::Node& v) {
                   const std::string field = "speculative." + key;
                   if (key == "method") {
                     if (auto m = get_choice(v, field, {"off", "ngram", "draft"})) s.method = *m;
                   } else if (key == "tokens") set_int(s.tokens, v, field, 1, 64);
                   else if (key == "ngram_min") set_int(s.ngram_min, v, field, 1, 64);
                   else if (key == "ngram_max") set_int(s.ngram_max, v, field, 1, 64);
                   else if (auto path = get_string(v, field)) s.draft_model = *path;
                 });
    if (s.ngram_min > s.ngram_max)
      error("speculative.ngram_min", plan_.locations["speculative.ngram_min"],
            cat("speculative.ngram_min (", s.ngram_min, ") must not exceed ngram_max (", s.ngram_max, ")"));
    if (s.method == "draft" && s.draft_model.empty())
      error("speculative.method", plan_.locations["speculative.method"],
            "speculative.method draft needs speculative.draft_model: a smaller checkpoint with the model's vocabulary");
    if (s.method != "draft" && !s.draft_model.empty())
      error("speculative.draft_model", plan_.locations["speculative.draft_model"],
            cat("speculative.draft_model is used by method draft only (method is ", s.method, "); set method: draft"));
  }

  void error(const std::string& field, SourceLoc loc, std::string message) {
    Diagnostic d;
    d.file = plan_.source;
    d.loc = loc.line > 0 ? loc : SourceLoc{1, 1};
    d.field = field;
    d.message = std::move(message);
    out_.diagnostics.push_back(std::move(d));
  }

  ParsedPlan& out_;
  Plan& plan_;
};

}  // namespace

int edit_distance(const std::string& a, const std::string& b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diag = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      const int cost = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                               std::tolower(static_cast<unsigned char>(b[j - 1]))
                           ? 0
                           : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + cost});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  int best_d = 0;
  for (const auto& c : candidates) {
    const int d = edit_distance(word, c);
    if (best.empty() || d < best_d) best = c, best_d = d;
  }
  // A third of the word's letters may be wrong (at least 2): "tensr", "pipline", "micro_batch".
  const int limit = std::max<int>(2, static_cast<int>(word.size()) / 3);
  return best_d <= limit && best_d < static_cast<int>(std::max(word.size(), best.size())) ? best : "";
}

ParsedPlan parse_plan(const std::string& text, const std::string& source) {
  ParsedPlan out;
  out.plan.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    Diagnostic d;
    d.file = source;
    d.loc = e.mark.is_null() ? SourceLoc{1, 1} : loc_of(e.mark);
    d.message = cat("malformed YAML: ", e.msg, "; check the indentation and quoting on or just above this line");
    out.diagnostics.push_back(std::move(d));
    return out;
  }
  PlanReader(out).read(root);
  return out;
}

ParsedPlan parse_plan_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) STRATA_THROW(ErrorKind::kIo, "cannot read plan '", path, "'; check the path (configs/ holds examples)");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_plan(buf.str(), path);
}

Plan load_plan(const std::string& path) {
  ParsedPlan parsed = parse_plan_file(path);
  throw_if_errors(parsed.diagnostics);
  return std::move(parsed.plan);
}

}  // namespace strata::parallel
