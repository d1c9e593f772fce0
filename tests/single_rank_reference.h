// tests/single_rank_reference.h: what the multi-rank tests (*_mpi_test) compare every parallel layout
// against, in one place: the plan of a layout, the models they run, and the whole model run by the
// rank itself (greedy tokens of prompts of different lengths and the logits of the first).
#pragma once
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/formats/model_writer.h"
#include "test_util.h"

namespace strata::test {

struct PlanLayout {
  int tp = 1, pp = 1, dp = 1;
  std::string stages;        // YAML flow list of explicit stages, or "" for balanced ones
  bool interleaved = false;  // parallel.schedule: interleaved
  int timeout_s = 60;        // comm.timeout_s
};

// The plan text of `layout` over the model at `path` (2 micro-batches).
inline std::string plan_yaml(const std::string& path, const PlanLayout& layout) {
  std::string yaml = "model:\n  path: " + path + "\nparallel:\n  tensor: " + std::to_string(layout.tp) +
                     "\n  pipeline: " + std::to_string(layout.pp) + "\n  data: " + std::to_string(layout.dp) +
                     "\n  micro_batches: 2\n";
  if (!layout.stages.empty()) yaml += "  stages: " + layout.stages + "\n";
  if (layout.interleaved) yaml += "  schedule: interleaved\n";
  return yaml + "comm:\n  timeout_s: " + std::to_string(layout.timeout_s) + "\n";
}

// A model of the layout tests: "fixture:<name>" (tests/fixtures/hf/<name>), or a make-model preset (or
// `config` when given) in f32 with seed 5, written by each rank into its own `prefix`_<spec>_r<rank>.
inline std::string layout_model(const std::string& spec, const std::string& prefix, int rank,
                                const std::optional<ModelConfig>& config = std::nullopt) {
  if (spec.rfind("fixture:", 0) == 0) return fixture("hf/" + spec.substr(8));
  MakeModelOptions o;
  o.format = "safetensors";
  o.dtype = "f32";
  o.seed = 5;
  if (config) o.config = *config;
  else o.preset = spec;
  o.out = temp_dir(prefix + "_" + spec + "_r" + std::to_string(rank));
  make_model(o);
  return make_model_output_path(o);
}

// The whole model on this rank alone: three prompts of different lengths, their greedy continuations
// (10, 11 and 12 tokens) and the logits of the first prompt.
struct SingleRankReference {
  std::vector<std::vector<int32_t>> prompts = {{1, 17, 29, 5, 88, 41, 7}, {1, 3}, {1, 200, 9, 14, 60}};
  std::vector<GenerationRequest> requests;
  std::vector<GenerationOutput> outputs;
  Tensor logits;
};

inline SingleRankReference single_rank_reference(const launcher::SessionOptions& options) {
  SingleRankReference ref;
  for (size_t i = 0; i < ref.prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = ref.prompts[i];
    r.max_new_tokens = 10 + static_cast<int64_t>(i);
    ref.requests.push_back(r);
  }
  launcher::ModelSession single(options);
  single.prepare(256);
  ref.outputs = single.generator().generate(ref.requests);
  ref.logits = single.generator().score(ref.prompts[0]);
  return ref;
}

// The layout's logits of the first prompt against the single rank's: within 1e-4 relative (the TP
// all-reduce sums in another order than the single-rank matmul).
inline void expect_logits_match(const SingleRankReference& ref, launcher::ModelSession& session,
                                const std::string& layout) {
  const Tensor logits = session.generator().score(ref.prompts[0]);
  ASSERT_EQ(logits.numel(), ref.logits.numel()) << layout;
  EXPECT_LT(max_rel_error(logits.data<float>(), ref.logits.data<float>(), static_cast<size_t>(logits.numel())), 1e-4)
      << layout;
}

}  // namespace strata::test
