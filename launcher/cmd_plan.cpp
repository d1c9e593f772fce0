// launcher/cmd_plan.cpp: `strata plan --check PLAN`: validates a plan against its model and prints,
// per rank, the coordinates, layers, shard shapes and bytes per tier. The model's shape comes from
// --model, else the plan's model.shape preset, else the checkpoint at model.path.
#include <cstdio>
#include <filesystem>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/model_presets.h"

namespace strata::launcher {

int cmd_plan(int argc, char** argv) {
  const Args args("plan", {{"check", true, "the YAML plan to validate"},
                           {"model", true, "checkpoint whose shape the plan is checked against"},
                           {"world", true, "job size to check against (default: the plan's data x pipeline x tensor)"},
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
  if (!warnings.empty()) std::fprintf(stderr, "%s", warnings.c_str());
  return 0;
}

}  // namespace strata::launcher
