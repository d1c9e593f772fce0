// parallel/plan_report.h: the text `strata plan --check` prints: the plan's world and stages, per rank
// its coordinates, layers, heads, shard shapes and bytes per tier, and the totals.
#pragma once
#include <string>

#include "parallel/partition.h"
#include "parallel/plan.h"
#include "runtime/model_config.h"

namespace strata::parallel {

std::string describe(const Plan& plan, const ModelConfig& config, const Partition& partition);

}  // namespace strata::parallel
