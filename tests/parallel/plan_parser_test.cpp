// tests/parallel/plan_parser_test.cpp: YAML -> Plan: defaults, every schema key, and each parse error
// with its file:line:col and suggestion (the positions are counted by hand in the texts below).
#include "parallel/plan_parser.h"

#include <gtest/gtest.h>

#include "parallel/byte_size.h"
#include "runtime/error.h"

namespace strata::parallel {
namespace {

ParsedPlan parse(const std::string& text) { return parse_plan(text, "p.yaml"); }

// The one error of `text`; fails the test when there is not exactly one.
Diagnostic only_error(const std::string& text) {
  ParsedPlan p = parse(text);
  EXPECT_EQ(p.diagnostics.size(), 1u) << join_diagnostics(p.diagnostics);
  return p.diagnostics.empty() ? Diagnostic{} : p.diagnostics.front();
}

TEST(PlanParser, MinimalPlanFromTheIssue) {
  ParsedPlan p = parse(
      "model:\n"
      "  path: models/llama-2-7b      # HF directory, GGUF file or llama2.c checkpoint\n"
      "parallel:\n"
      "  tensor: 2\n"
      "  pipeline: 2\n"
      "  data: 1\n");
  ASSERT_TRUE(p.ok()) << join_diagnostics(p.diagnostics);
  EXPECT_EQ(p.plan.model.path, "models/llama-2-7b");
  EXPECT_FALSE(p.plan.model.dtype.has_value());
  EXPECT_EQ(p.plan.parallel.tensor, 2);
  EXPECT_EQ(p.plan.parallel.pipeline, 2);
  EXPECT_EQ(p.plan.parallel.data, 1);
  EXPECT_EQ(p.plan.world_size(), 4);
  EXPECT_EQ(p.plan.micro_batches(), 2);  // defaults to one per stage
  EXPECT_TRUE(p.plan.parallel.stages.empty());
  EXPECT_FALSE(p.plan.offload.device_budget.is_set());
  EXPECT_EQ(p.plan.offload.cold_tier, Tier::kHost);
  EXPECT_EQ(p.plan.offload.prefetch_depth, 2);
  EXPECT_DOUBLE_EQ(p.plan.offload.batch_wait_ms, 2.0);
  EXPECT_EQ(p.plan.comm.backend, CommBackend::kAuto);
  EXPECT_EQ(p.plan.comm.overlap_chunks, 2);
  EXPECT_EQ(p.plan.comm.overlap_min_tokens, 128);
  EXPECT_DOUBLE_EQ(p.plan.comm.timeout_s, 60.0);
  EXPECT_EQ(p.plan.serve.port, 8080);
  EXPECT_EQ(p.plan.serve.block_size, 16);
  EXPECT_EQ(p.plan.where("parallel.tensor").line, 4);
  EXPECT_EQ(p.plan.where("parallel.tensor").column, 11);
}

TEST(PlanParser, FullSchema) {
  ParsedPlan p = parse(R"(model:
  path: m.gguf
  dtype: q8_0
  shape: 70b-shape
parallel:
  tensor: 4
  pipeline: 2
  data: 3
  micro_batches: 6
  stages: [{layers: "0-39"}, {layers: [40, "41-79"]}]
offload:
  device_budget: 6GiB
  host_budget: 512 MiB
  cold_tier: disk
  prefetch_depth: 3
  batch_wait_ms: 7.5
  rules: [{match: "blk.*.ffn_*", tier: host}, {match: output.weight, tier: device}]
  per_rank: [{ranks: "0-3, 7", device_budget: "40%", host_budget: 1GB}]
comm: {backend: nccl, overlap_chunks: 4, overlap_min_tokens: 32, timeout_s: 12.5}
serve:
  port: 9000
  max_batch_tokens: 2048
  max_seqs: 8
  kv_budget: 10GiB
  block_size: 32
  max_queue: 5
)");
  ASSERT_TRUE(p.ok()) << join_diagnostics(p.diagnostics);
  const Plan& plan = p.plan;
  EXPECT_EQ(plan.model.dtype, DType::kQ8_0);
  EXPECT_EQ(plan.model.shape, "70b-shape");
  EXPECT_EQ(plan.world_size(), 24);
  EXPECT_EQ(plan.micro_batches(), 6);
  ASSERT_EQ(plan.parallel.stages.size(), 2u);
  EXPECT_EQ(plan.parallel.stages[0].layers.size(), 40u);
  EXPECT_EQ(plan.parallel.stages[1].layers.front(), 40);
  EXPECT_EQ(plan.parallel.stages[1].layers.back(), 79);
  EXPECT_EQ(plan.offload.device_budget.bytes, 6LL << 30);
  EXPECT_EQ(plan.offload.host_budget.bytes, 512LL << 20);
  EXPECT_EQ(plan.offload.cold_tier, Tier::kDisk);
  EXPECT_EQ(plan.offload.prefetch_depth, 3);
  EXPECT_DOUBLE_EQ(plan.offload.batch_wait_ms, 7.5);
  ASSERT_EQ(plan.offload.rules.size(), 2u);
  EXPECT_EQ(plan.offload.rules[0].match, "blk.*.ffn_*");
  EXPECT_EQ(plan.offload.rules[1].tier, Tier::kDevice);
  ASSERT_EQ(plan.offload.per_rank.size(), 1u);
  EXPECT_EQ(plan.offload.per_rank[0].ranks, (std::vector<int>{0, 1, 2, 3, 7}));
  EXPECT_DOUBLE_EQ(plan.offload.per_rank[0].device_budget.percent, 40.0);
  EXPECT_EQ(plan.offload.per_rank[0].host_budget.bytes, 1000000000);
  EXPECT_EQ(plan.comm.backend, CommBackend::kNccl);
  EXPECT_EQ(plan.comm.overlap_chunks, 4);
  EXPECT_EQ(plan.comm.overlap_min_tokens, 32);
  EXPECT_DOUBLE_EQ(plan.comm.timeout_s, 12.5);
  EXPECT_EQ(plan.serve.port, 9000);
  EXPECT_EQ(plan.serve.max_batch_tokens, 2048);
  EXPECT_EQ(plan.serve.max_seqs, 8);
  EXPECT_EQ(plan.serve.kv_budget.bytes, 10LL << 30);
  EXPECT_EQ(plan.serve.block_size, 32);
  EXPECT_EQ(plan.serve.max_queue, 5);
}

TEST(PlanParser, UnknownKeySuggestsNearest) {
  const Diagnostic d = only_error("parallel:\n  tensr: 2\n");
  EXPECT_EQ(d.str(), "p.yaml:2:3: error: unknown key 'tensr' in parallel (did you mean 'tensor'?)");
  EXPECT_EQ(d.field, "parallel.tensr");
}

TEST(PlanParser, UnknownKeyFarFromAnyListsValidKeys) {
  const Diagnostic d = only_error("model:\n  path: a\nfrobnicate: 1\n");
  EXPECT_NE(d.str().find("p.yaml:3:1:"), std::string::npos) << d.str();
  EXPECT_NE(d.message.find("unknown key 'frobnicate' at the top level; valid keys: model, parallel, offload, comm, serve"),
            std::string::npos)
      << d.message;
}

TEST(PlanParser, TopLevelTypoSuggests) {
  const Diagnostic d = only_error("paralel:\n  tensor: 2\n");
  EXPECT_EQ(d.str(), "p.yaml:1:1: error: unknown key 'paralel' at the top level (did you mean 'parallel'?)");
}

TEST(PlanParser, WrongTypeNamesFieldAndValue) {
  const Diagnostic d = only_error("parallel:\n  tensor: two\n");
  EXPECT_EQ(d.str(), "p.yaml:2:11: error: parallel.tensor must be a positive integer, got 'two'");
  EXPECT_NE(only_error("parallel:\n  pipeline: 0\n").message.find("got '0'"), std::string::npos);
  EXPECT_NE(only_error("parallel:\n  data: [1, 2]\n").message.find("parallel.data must be"), std::string::npos);
  EXPECT_NE(only_error("serve:\n  port: 70000\n").message.find("serve.port must be at most 65535, got '70000'"),
            std::string::npos);
  EXPECT_NE(only_error("comm:\n  timeout_s: soon\n").message.find("positive number of seconds"), std::string::npos);
  EXPECT_NE(only_error("comm:\n  overlap_min_tokens: 0\n").message.find("comm.overlap_min_tokens"), std::string::npos);
  EXPECT_NE(only_error("serve:\n  block_size: 24\n").message.find("power of two"), std::string::npos);
  EXPECT_NE(only_error("parallel: 4\n").message.find("parallel must be a map"), std::string::npos);
}

TEST(PlanParser, MalformedYamlHasLineAndColumn) {
  ParsedPlan p = parse("parallel:\n  tensor: 2\n  pipeline: [1, 2\n");
  ASSERT_EQ(p.diagnostics.size(), 1u);
  const std::string s = p.diagnostics[0].str();
  EXPECT_EQ(s.rfind("p.yaml:", 0), 0u) << s;
  EXPECT_NE(s.find("malformed YAML"), std::string::npos) << s;
  EXPECT_GT(p.diagnostics[0].loc.line, 0);
  EXPECT_GT(p.diagnostics[0].loc.column, 0);

  ParsedPlan bad_indent = parse("model:\n  path: a\n   dtype: f16\n");
  ASSERT_EQ(bad_indent.diagnostics.size(), 1u);
  EXPECT_EQ(bad_indent.diagnostics[0].loc.line, 3) << bad_indent.diagnostics[0].str();
}

TEST(PlanParser, EnumsSuggestNearest) {
  EXPECT_EQ(only_error("offload:\n  cold_tier: hots\n").str(),
            "p.yaml:2:14: error: offload.cold_tier must be one of host, disk, got 'hots' (did you mean 'host'?)");
  EXPECT_NE(only_error("comm:\n  backend: ncl\n").message.find("did you mean 'nccl'?"), std::string::npos);
  EXPECT_EQ(only_error("parallel:\n  pipeline: 2\n  schedule: interleave\n").str(),
            "p.yaml:3:13: error: parallel.schedule must be one of steps, interleaved, got 'interleave' (did you mean "
            "'interleaved'?)");
  EXPECT_TRUE(parse("parallel:\n  pipeline: 2\n  schedule: interleaved\n").plan.parallel.interleaved);
  EXPECT_FALSE(parse("parallel:\n  pipeline: 2\n").plan.parallel.interleaved);
  EXPECT_NE(only_error("model:\n  dtype: fp16\n").message.find("did you mean 'f16'?"), std::string::npos);
  EXPECT_NE(only_error("model:\n  shape: 7b-shap\n").message.find("did you mean '7b-shape'?"), std::string::npos);
  EXPECT_NE(only_error("model:\n  shape: gpt2\n").message.find("known shapes: tiny, small"), std::string::npos);
}

TEST(PlanParser, DuplicateKey) {
  ParsedPlan p = parse("parallel:\n  tensor: 2\n  tensor: 4\n");
  ASSERT_EQ(p.diagnostics.size(), 1u) << join_diagnostics(p.diagnostics);
  EXPECT_EQ(p.diagnostics[0].loc.line, 3);
  EXPECT_NE(p.diagnostics[0].message.find("duplicate key 'tensor'"), std::string::npos);
}

TEST(PlanParser, BudgetsAndStages) {
  EXPECT_NE(only_error("offload:\n  device_budget: 6 gigs\n").message.find("must be a size such as 6GiB"),
            std::string::npos);
  EXPECT_NE(only_error("offload:\n  host_budget: \"40%\"\n").message.find("offload.host_budget must be a size"),
            std::string::npos);  // a share of host memory is not offered
  EXPECT_NE(only_error("offload:\n  device_budget: \"140%\"\n").message.find("or a share"), std::string::npos);
  const Diagnostic d = only_error("parallel:\n  pipeline: 2\n  stages: [\"0-3\", \"4-x\"]\n");
  EXPECT_EQ(d.field, "parallel.stages[1]");
  EXPECT_EQ(d.loc.line, 3);
  EXPECT_NE(d.message.find("'4-x' is not a layer set"), std::string::npos) << d.message;
  EXPECT_NE(only_error("parallel:\n  stages: [{layerz: \"0-3\"}]\n").message.find("did you mean 'layers'?"),
            std::string::npos);
  ParsedPlan shorthand = parse("parallel:\n  pipeline: 3\n  stages: [\"0-1\", [2], {layers: 3}]\n");
  ASSERT_TRUE(shorthand.ok()) << join_diagnostics(shorthand.diagnostics);
  EXPECT_EQ(shorthand.plan.parallel.stages[2].layers, (std::vector<int64_t>{3}));
  EXPECT_EQ(shorthand.plan.parallel.stages[1].loc.line, 3);
}

TEST(PlanParser, BatchWaitIsBoundedMilliseconds) {
  EXPECT_EQ(only_error("offload:\n  batch_wait_ms: soon\n").str(),
            "p.yaml:2:18: error: offload.batch_wait_ms must be milliseconds in [0, 1000] (0 turns the wait off), "
            "got 'soon'");
  EXPECT_NE(only_error("offload:\n  batch_wait_ms: -1\n").message.find("got '-1'"), std::string::npos);
  EXPECT_NE(only_error("offload:\n  batch_wait_ms: 5000\n").message.find("[0, 1000]"), std::string::npos);
  EXPECT_NE(only_error("offload:\n  batch_wait_ms: [1]\n").message.find("offload.batch_wait_ms"), std::string::npos);
  const ParsedPlan off = parse("offload:\n  batch_wait_ms: 0\n");
  ASSERT_TRUE(off.ok()) << join_diagnostics(off.diagnostics);
  EXPECT_EQ(off.plan.offload.batch_wait_ms, 0.0);
}

TEST(PlanParser, RulesNeedMatchAndTier) {
  EXPECT_NE(only_error("offload:\n  rules: [{match: \"blk.*\"}]\n").message.find("needs both match"), std::string::npos);
  EXPECT_NE(only_error("offload:\n  rules: [{match: x, tier: gpu}]\n").message.find("one of device, host, disk"),
            std::string::npos);
  EXPECT_NE(only_error("offload:\n  per_rank: [{device_budget: 1GiB}]\n").message.find("needs ranks"),
            std::string::npos);
}

TEST(PlanParser, KvBlocksAndBudgetExclusive) {
  EXPECT_NE(only_error("serve:\n  kv_blocks: 10\n  kv_budget: 1GiB\n").message.find("keep one of them"),
            std::string::npos);
}

TEST(PlanParser, KvCacheDtypeTakesTheFlagsValuesAndNamesABadOne) {
  const ParsedPlan fp8 = parse("serve:\n  kv_cache_dtype: fp8\n");
  ASSERT_TRUE(fp8.ok()) << join_diagnostics(fp8.diagnostics);
  EXPECT_EQ(fp8.plan.serve.kv_cache_dtype, DType::kF8_E4M3);
  const ParsedPlan automatic = parse("serve:\n  kv_cache_dtype: auto\n");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic.plan.serve.kv_cache_dtype, std::nullopt);
  EXPECT_EQ(parse("serve:\n  port: 9000\n").plan.serve.kv_cache_dtype, std::nullopt);
  const Diagnostic d = only_error("serve:\n  kv_cache_dtype: int4\n");
  EXPECT_EQ(d.field, "serve.kv_cache_dtype");
  EXPECT_NE(d.str().find("p.yaml:2:19"), std::string::npos) << d.str();
  EXPECT_NE(d.message.find("'int4' is not a KV cache dtype"), std::string::npos) << d.message;
}

TEST(PlanParser, ReportsEveryErrorAndLoadThrowsThemJoined) {
  const std::string text = "parallel:\n  tensor: two\n  pipline: 2\noffload:\n  cold_tier: tape\n";
  ParsedPlan p = parse(text);
  EXPECT_EQ(p.diagnostics.size(), 3u) << join_diagnostics(p.diagnostics);

  const std::string dir = std::getenv("STRATA_TEST_TMP") ? std::getenv("STRATA_TEST_TMP") : "/tmp";
  const std::string path = dir + "/plan_parser_test_bad.yaml";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  try {
    load_plan(path);
    FAIL() << "load_plan accepted a bad plan";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    const std::string what = e.what();
    EXPECT_NE(what.find("invalid plan (3 errors)"), std::string::npos) << what;
    EXPECT_NE(what.find(path + ":2:11: error: parallel.tensor must be a positive integer, got 'two'"), std::string::npos);
    EXPECT_NE(what.find(path + ":3:3: error: unknown key 'pipline' in parallel (did you mean 'pipeline'?)"),
              std::string::npos);
    EXPECT_NE(what.find(path + ":5:14:"), std::string::npos) << what;
  }
  EXPECT_THROW(load_plan(dir + "/does-not-exist.yaml"), Error);
}

TEST(PlanParser, EmptyOrNonMapDocument) {
  EXPECT_NE(only_error("").message.find("the plan is empty"), std::string::npos);
  EXPECT_NE(only_error("# only a comment\n").message.find("the plan is empty"), std::string::npos);
  EXPECT_NE(only_error("- a\n- b\n").message.find("got a list"), std::string::npos);
}

TEST(ByteSize, ParsesUnits) {
  EXPECT_EQ(parse_byte_size("6GiB"), 6LL << 30);
  EXPECT_EQ(parse_byte_size("6 GiB"), 6LL << 30);
  EXPECT_EQ(parse_byte_size("1.5gib"), 3LL << 29);
  EXPECT_EQ(parse_byte_size("512MB"), 512000000);
  EXPECT_EQ(parse_byte_size("64KiB"), 65536);
  EXPECT_EQ(parse_byte_size("1024"), 1024);
  EXPECT_FALSE(parse_byte_size("6 gigs"));
  EXPECT_FALSE(parse_byte_size("GiB"));
  EXPECT_FALSE(parse_byte_size("1.2.3GiB"));
  EXPECT_EQ(parse_percent("40%"), 40.0);
  EXPECT_EQ(parse_percent("12.5 %"), 12.5);
  EXPECT_FALSE(parse_percent("0%"));
  EXPECT_FALSE(parse_percent("101%"));
  EXPECT_EQ(format_bytes(1536LL << 20), "1.50 GiB");
  EXPECT_EQ(format_bytes(100), "100 B");
  EXPECT_EQ(format_bytes_ceil((1LL << 30) + 1), "1.01 GiB");  // rounds up, never down
}

TEST(EditDistance, Suggestions) {
  EXPECT_EQ(edit_distance("tensr", "tensor"), 1);
  EXPECT_EQ(edit_distance("", "abc"), 3);
  EXPECT_EQ(nearest_name("pipline", {"tensor", "pipeline", "data"}), "pipeline");
  EXPECT_EQ(nearest_name("micro_batch", {"micro_batches", "stages"}), "micro_batches");
  EXPECT_EQ(nearest_name("xyz", {"tensor", "pipeline", "data"}), "");
}

TEST(PlanParser, SpeculativeSection) {
  const ParsedPlan p = parse("speculative:\n  method: draft\n  tokens: 5\n  draft_model: /m/small.gguf\n");
  ASSERT_TRUE(p.ok()) << join_diagnostics(p.diagnostics);
  EXPECT_EQ(p.plan.speculative.method, "draft");
  EXPECT_EQ(p.plan.speculative.tokens, 5);
  EXPECT_EQ(p.plan.speculative.draft_model, "/m/small.gguf");
  const ParsedPlan n = parse("speculative:\n  method: ngram\n  ngram_min: 2\n  ngram_max: 4\n");
  ASSERT_TRUE(n.ok()) << join_diagnostics(n.diagnostics);
  EXPECT_EQ(n.plan.speculative.ngram_min, 2);
  EXPECT_EQ(n.plan.speculative.ngram_max, 4);
  EXPECT_EQ(parse("model:\n  path: a\n").plan.speculative.method, "off");
  EXPECT_EQ(only_error("speculative:\n  method: ngrams\n").str(),
            "p.yaml:2:11: error: speculative.method must be one of off, ngram, draft, got 'ngrams' (did you mean "
            "'ngram'?)");
  EXPECT_NE(only_error("speculative:\n  method: draft\n").message.find("needs speculative.draft_model"),
            std::string::npos);
  EXPECT_NE(only_error("speculative:\n  ngram_min: 3\n  ngram_max: 2\n").message.find("must not exceed"),
            std::string::npos);
  EXPECT_NE(only_error("speculative:\n  tokens: 0\n").message.find("speculative.tokens"), std::string::npos);
  EXPECT_EQ(only_error("parallel:\n  pipeline: 2\n  schedule: interleaved\nspeculative:\n  method: ngram\n").str(),
            "p.yaml:5:11: error: speculative decoding does not work with parallel.schedule: interleaved; use the "
            "default schedule or method: off");
}

}  // namespace
}  // namespace strata::parallel
