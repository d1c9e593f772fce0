// parallel/plan_check.h: checks of a parsed plan against a model and a world size: head counts that
// TP must divide, stages that cover every layer once, budgets that fit. Every finding is a located
// diagnostic naming the fix; nothing here throws except check_plan.
#pragma once
#include <vector>

#include "parallel/partition.h"
#include "parallel/plan.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/model_config.h"

namespace strata::parallel {

// Every diagnostic (errors and warnings) of `plan` for `config` on options.world_size ranks.
std::vector<Diagnostic> validate_plan(const Plan& plan, const ModelConfig& config, const PartitionOptions& options);
std::vector<Diagnostic> validate_plan(const Plan& plan, const ModelConfig& config, int world_size);
// validate_plan, then throws strata::Error(kConfig) joining every diagnostic when any is an error.
void check_plan(const Plan& plan, const ModelConfig& config, const PartitionOptions& options);

// Tensor sizes that satisfy the head, KV-head, ffn and quantization rules for `config` in `dtype`.
std::vector<int> valid_tensor_sizes(const ModelConfig& config, DType dtype);

// The dtype a plan without model.dtype holds `checkpoint`'s weights in: its layer matrices' dtype, or,
// when a row-parallel (kCols) matrix is block-quantized, the quantized type with the largest block
// among them (a llama-quantize Q4_K_M file: q4_k / q6_k, 256 elements), since a TP split must keep its
// blocks whole; `fallback` for a checkpoint without layer matrices.
DType checkpoint_weight_dtype(const Checkpoint& checkpoint, DType fallback);

}  // namespace strata::parallel
