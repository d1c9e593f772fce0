// launcher/cmd_plan.cpp: `strata plan --check PLAN`: validates a plan against its model and prints,
// per rank, the coordinates, layers, shard shapes and bytes per tier. The model's shape comes from
// --model, else the plan's model.shape preset, else the checkpoint at model.path.
#include <boost/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "offload/residency.h"
#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/model_presets.h"

namespace strata::launcher {
namespace {

// Per rank: the placement offload/ will use at run time and the decode rate it allows, from
// measured ceilings (--ceilings FILE written by scripts/bench-offload.sh, or --h2d-gbs & co.).
std::string describe_offload(const Args& args, const parallel::Plan& plan, const parallel::Partition& partition) {
  offload::Ceilings ceilings;
  std::string source = "flags";
  if (args.has("ceilings")) {
    source = args.str("ceilings");
    std::ifstream in(source);
    STRATA_CHECK(in.good(), "--ceilings: cannot read '", source, "'");
    std::stringstream text;
    text << in.rdbuf();
    const boost::json::object o = boost::json::parse(text.str()).as_object();
    auto get = [&](const char* key) { return o.contains(key) ? o.at(key).to_number<double>() : 0.0; };
    ceilings = {get("device_gbs"), get("h2d_gbs"), get("disk_gbs")};
  }
  ceilings.device_gbs = args.number("device-gbs", ceilings.device_gbs, 0, 1e6);
  ceilings.link_gbs = args.number("h2d-gbs", ceilings.link_gbs, 0, 1e6);
  ceilings.disk_gbs = args.number("disk-gbs", ceilings.disk_gbs, 0, 1e6);
  const bool have_ceilings = ceilings.device_gbs > 0 || ceilings.link_gbs > 0 || ceilings.disk_gbs > 0;
  std::string out;
  for (const parallel::RankPartition& r : partition.ranks) {
    offload::ResidencyConfig config;
    config.device_budget = r.device_budget;
    config.host_budget = r.host_budget;
    config.cold_tier = plan.offload.cold_tier == parallel::Tier::kDisk ? offload::Tier::kDisk : offload::Tier::kHost;
    config.prefetch_depth = plan.offload.prefetch_depth;
    for (const auto& rule : plan.offload.rules)
      config.rules.push_back({rule.match, rule.tier == parallel::Tier::kDevice ? offload::Tier::kDevice
                                          : rule.tier == parallel::Tier::kDisk ? offload::Tier::kDisk
                                                                                : offload::Tier::kHost});
    std::vector<offload::TensorItem> items;
    for (const auto& s : r.shards)
      items.push_back({s.name, s.layer, s.bytes, offload::tensor_group(s.name, static_cast<int>(s.local_shape.size()))});
    offload::Placement p;
    try {
      p = offload::place(items, config);
    } catch (const Error& e) {  // parallel/'s validation owns the verdict; this line only informs
      out += cat("offload r", r.rank, ": ", e.what(), "\n");
      continue;
    }
    if (!p.streams() && !have_ceilings) continue;
    out += cat("offload r", r.rank, " (", p.strategy, "): device ", offload::format_size(p.device_bytes()),
               " (weights ", offload::format_size(p.resident_bytes), ", ring ", p.slots, " x ",
               offload::format_size(p.slot_bytes), "), streamed per token: host ", offload::format_size(p.host_bytes),
               ", disk ", offload::format_size(p.disk_bytes), "\n");
    if (!have_ceilings) {
      out += "  predicted decode: pass --ceilings bench/results/offload-ceilings.json (scripts/bench-offload.sh "
             "measures them) or --device-gbs/--h2d-gbs/--disk-gbs\n";
      continue;
    }
    const offload::DecodeEstimate one = offload::estimate_decode(p, ceilings, 1);
    const offload::DecodeEstimate many = offload::estimate_decode(p, ceilings, 64);
    char line[256];
    std::snprintf(line, sizeof line,
                  "  predicted decode: %.2f tok/s at batch 1, at most %.1f tok/s at batch 64 (%s bound; ceilings "
                  "device %.0f, h2d %.1f, disk %.2f GB/s from %s)\n",
                  one.tokens_per_s, many.tokens_per_s, one.bound.c_str(), ceilings.device_gbs, ceilings.link_gbs,
                  ceilings.disk_gbs, source.c_str());
    out += line;
  }
  return out;
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  const Args args("plan", {{"check", true, "the YAML plan to validate"},
                           {"model", true, "checkpoint whose shape the plan is checked against"},
                           {"world", true, "job size to check against (default: the plan's data x pipeline x tensor)"},
                           {"ceilings", true, "JSON of measured ceilings (device_gbs, h2d_gbs, disk_gbs) for the "
                                              "predicted decode rate of offloaded ranks"},
                           {"device-gbs", true, "device memory read rate, GB/s (overrides --ceilings)"},
                           {"h2d-gbs", true, "pinned host-to-device copy rate, GB/s (overrides --ceilings)"},
                           {"disk-gbs", true, "sequential read rate of the checkpoint's disk, GB/s"},
                           {"help", false, "show this help"}},
                  argc, argv, 2, true);
  if (args.has("help")) {
    std::printf("%s", args.usage().c_str());
    return 0;
  }
  std::string path = args.str("check");
  if (path.empty() && !args.positionals().empty()) path = args.positionals()[0];
  STRATA_CHECK(!path.empty(), "strata plan: give the plan to check: strata plan --check configs/x.yaml");
  const parallel::ParsedPlan parsed = parallel::parse_plan_file(path);
  if (parallel::has_errors(parsed.diagnostics)) {
    std::fprintf(stderr, "%s", parallel::join_diagnostics(parsed.diagnostics).c_str());
    return 1;
  }
  const parallel::Plan& plan = parsed.plan;
  ModelConfig config;
  std::string source;
  if (args.has("model")) {
    source = args.str("model");
    config = open_checkpoint(source)->config();
  } else if (!plan.model.shape.empty()) {
    source = "shape " + plan.model.shape;
    config = model_preset(plan.model.shape);
  } else {
    STRATA_CHECK_KIND(ErrorKind::kConfig, std::filesystem::exists(plan.model.path), path, ": model.path '",
                      plan.model.path, "' does not exist; pass --model PATH or add model.shape to check the plan "
                      "without the weights");
    source = plan.model.path;
    config = open_checkpoint(source)->config();
  }
  const int world = static_cast<int>(args.integer("world", plan.world_size(), 1, 1 << 20));
  const std::vector<parallel::Diagnostic> diagnostics = parallel::validate_plan(plan, config, world);
  std::string warnings;
  for (const auto& d : parsed.diagnostics) warnings += d.str() + "\n";
  for (const auto& d : diagnostics) warnings += d.str() + "\n";
  if (parallel::has_errors(diagnostics)) {
    std::fprintf(stderr, "%s", warnings.c_str());
    return 1;
  }
  const parallel::Partition partition = parallel::make_partition(plan, config, world);
  std::printf("plan %s checked against %s\n%s", path.c_str(), source.c_str(),
              parallel::describe(plan, config, partition).c_str());
  std::printf("%s", describe_offload(args, plan, partition).c_str());
  if (!warnings.empty()) std::fprintf(stderr, "%s", warnings.c_str());
  return 0;
}

}  // namespace strata::launcher
