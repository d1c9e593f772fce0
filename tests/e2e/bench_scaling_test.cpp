// tests/e2e/bench_scaling_test.cpp: `strata bench scaling` end to end on CPU ranks: a sweep of the tiny
// preset on 1, 2 and 4 ranks under mpirun. Checks the report's structure, that every point ran and
// that the measured step breakdown is physically consistent; never its timings (tests do not assert
// on time). Also `plan --predict` and `plan --suggest`.
#include <gtest/gtest.h>

#include <unistd.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "test_util.h"

namespace strata {
namespace {
namespace json = boost::json;

std::string strata() { return test::strata_binary(); }

double number(const json::object& o, const char* key) {
  EXPECT_TRUE(o.contains(key)) << key << " missing from " << json::serialize(o);
  return o.contains(key) ? o.at(key).to_number<double>() : 0.0;
}

// The measured split of rank 0's decode step: its parts are physical (non-negative, adding up to the
// step), communication exists exactly when the plan has a TP group, and the hidden share is a share.
// Structure and consistency only: never how fast anything was.
void check_measured_breakdown(const json::object& point) {
  const json::object& m = point.at("measured").as_object();
  ASSERT_TRUE(m.contains("breakdown")) << json::serialize(m);
  const json::object& b = m.at("breakdown").as_object();
  EXPECT_GT(number(b, "steps"), 0);
  double sum = 0;
  for (const char* key : {"compute_ms", "comm_exposed_ms", "stream_wait_ms", "sample_ms", "schedule_ms"}) {
    EXPECT_GE(number(b, key), 0) << key;
    sum += number(b, key);
  }
  const double step = number(b, "step_ms");
  EXPECT_GT(step, 0);
  EXPECT_NEAR(sum, step, 1e-6 + 1e-6 * step) << json::serialize(b);
  for (const char* key : {"comm_total_ms", "comm_hidden_ms", "stream_total_ms", "stream_hidden_ms"})
    EXPECT_GE(number(b, key), 0) << key;
  EXPECT_NEAR(number(b, "comm_total_ms"), number(b, "comm_exposed_ms") + number(b, "comm_hidden_ms"), 1e-6);
  const json::value& hidden = b.at("comm_hidden_fraction");
  if (point.at("tensor").as_int64() > 1) {
    EXPECT_GT(number(b, "comm_total_ms"), 0) << "a TP group communicates every step";
    EXPECT_GT(number(b, "comm_ops_per_step"), 0);
    EXPECT_GT(number(b, "comm_bytes_per_step"), 0);
    ASSERT_FALSE(hidden.is_null());
    EXPECT_GE(hidden.to_number<double>(), 0);
    EXPECT_LE(hidden.to_number<double>(), 1);
  } else {
    EXPECT_EQ(number(b, "comm_total_ms"), 0) << "a group of one moves nothing";
    EXPECT_EQ(number(b, "comm_ops_per_step"), 0);
    EXPECT_TRUE(hidden.is_null()) << "no communication: the hidden share is n/a";
  }
  // Nothing streams in these plans.
  EXPECT_EQ(number(b, "stream_bytes_per_step"), 0);
  EXPECT_TRUE(b.at("stream_hidden_fraction").is_null());
  EXPECT_EQ(number(m, "tp_all_reduces") > 0, point.at("tensor").as_int64() > 1);

  ASSERT_TRUE(m.contains("memory")) << json::serialize(m);
  const json::object& mem = m.at("memory").as_object();
  EXPECT_GT(number(mem, "weights_device_bytes"), 0);
  EXPECT_GT(number(mem, "kv_bytes"), 0);
  for (const char* key : {"weights_host_bytes", "weights_disk_bytes", "stream_ring_bytes"})
    EXPECT_EQ(number(mem, key), 0) << key << ": every weight is resident without offload";
}

TEST(BenchScaling, CpuSweepOnOneTwoAndFourRanksRunsEveryPoint) {
  const std::string dir = test::temp_dir("bench-scaling");
  std::filesystem::remove_all(dir + "/out");
  const std::string model = dir + "/tiny";
  if (!std::filesystem::exists(model)) {
    const auto made = test::run_command(strata() + " make-model --preset tiny --out " + model);
    ASSERT_EQ(made.exit_code, 0) << made.output;
  }
  const std::string sweep = dir + "/sweep.yaml";
  std::ofstream(sweep) << "name: test-cpu\n"
                       << "model: {path: " << model << "}\n"
                       << "hardware: " << test::source_dir() << "/bench/hardware/cpu-local.yaml\n"
                       << "launcher: mpirun\n"
                       << "plans:\n"
                       << "  - {name: tp1, tensor: 1}\n"
                       << "  - {name: tp2, tensor: 2}\n"
                       << "  - {name: tp2-pp2, tensor: 2, pipeline: 2}\n"
                       << "batch: [2]\nprompt_len: [8]\noutput_len: [4]\n"
                       << "weak_scaling: {batch_per_rank: 1}\n"
                       << "timeout_s: 240\n";
  const auto r = test::run_command(strata() + " bench scaling --sweep " + sweep + " --out " + dir + "/out" +
                                       " --plot-script " + test::source_dir() + "/scripts/plot-scaling.py",
                                   900);
  std::printf("%s\n", r.output.c_str());  // the predicted-vs-measured table, for the log
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pred/s"), std::string::npos);
  EXPECT_NE(r.output.find("measured: cmp/comm/strm/other"), std::string::npos);

  std::ifstream in(dir + "/out/report.json");
  std::stringstream text;
  text << in.rdbuf();
  const json::object report = json::parse(text.str()).as_object();
  EXPECT_EQ(report.at("points_failed").as_int64(), 0);
  const json::array& points = report.at("points").as_array();
  ASSERT_EQ(points.size(), 6u);  // 3 plans x (batch 2 + one weak-scaling batch)
  std::set<int64_t> ranks;
  for (const json::value& v : points) {
    const json::object& p = v.as_object();
    EXPECT_EQ(p.at("status").as_string(), "ok") << json::serialize(p);
    ranks.insert(p.at("ranks").as_int64());
    const json::object& m = p.at("measured").as_object();
    for (const char* key : {"decode_tokens_per_s", "prefill_tokens_per_s", "ms_per_step", "ttft_ms", "itl_ms", "world"})
      EXPECT_TRUE(m.contains(key)) << key;
    EXPECT_EQ(m.at("world").as_int64(), p.at("ranks").as_int64());
    EXPECT_GT(m.at("decode_tokens_per_s").to_number<double>(), 0);
    const json::object& pred = p.at("predicted").as_object();
    const json::object& step = pred.at("decode_step").as_object();
    for (const char* key : {"compute_ms", "allreduce_ms", "allreduce_exposed_ms", "p2p_ms", "bubble_ms", "stream_ms",
                            "hidden_fraction", "bound"})
      EXPECT_TRUE(step.contains(key)) << key;
    EXPECT_TRUE(p.contains("decode_rel_error"));
    check_measured_breakdown(p);
  }
  EXPECT_EQ(ranks, (std::set<int64_t>{1, 2, 4}));
  // Strong scaling: every point of batch 2 against tp1; weak: batch = ranks x 1.
  const json::array& strong = report.at("strong_scaling").as_array();
  EXPECT_EQ(strong.size(), 3u);
  for (const json::value& v : strong) {
    EXPECT_EQ(v.at("baseline").as_string(), "tp1");
    EXPECT_TRUE(v.as_object().contains("efficiency"));
    EXPECT_TRUE(v.as_object().contains("predicted_speedup"));
  }
  EXPECT_EQ(report.at("weak_scaling").as_array().size(), 3u);
  // Plots are optional (no matplotlib: the sweep says so and still succeeds).
  if (r.output.find("wrote strong-scaling.png") != std::string::npos) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/out/strong-scaling.png"));
    EXPECT_TRUE(std::filesystem::exists(dir + "/out/time-breakdown.png"));
    EXPECT_TRUE(std::filesystem::exists(dir + "/out/memory-per-tier.png"));
  } else {
    EXPECT_NE(r.output.find("plots: skipped"), std::string::npos) << r.output;
  }
}

TEST(BenchScaling, PlanPredictAndSuggest) {
  const std::string root = test::source_dir();
  const auto p = test::run_command(strata() + " plan --check " + root + "/configs/llama2-70b-tp8.yaml --predict --hardware " +
                                   root + "/bench/hardware/h100-sxm-node.yaml --batch 1,64");
  ASSERT_EQ(p.exit_code, 0) << p.output;
  EXPECT_NE(p.output.find("predicted on"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("batch   64:"), std::string::npos) << p.output;
  const auto s = test::run_command(strata() + " plan --suggest --model 70b-shape --hardware " + root +
                                   "/bench/hardware/dgx-h100-ib.yaml --gpus 8,1024");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find("8 GPUs (1 node)"), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("1024 GPUs (128 nodes)"), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("1. tp"), std::string::npos) << s.output;
  const auto bad = test::run_command(strata() + " plan --suggest --model 70b-shape");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--hardware"), std::string::npos) << bad.output;
}

// As root, Open MPI's mpirun refuses to start unless told it is meant: the sweep says so, with the two
// variables that allow it, before running any point (its points all failed with the refusal cut short).
TEST(BenchScaling, MpirunAsRootNamesTheVariablesToSet) {
  if (geteuid() != 0) GTEST_SKIP() << "not root: mpirun starts";
  if (test::run_command("mpirun --version").output.find("Open MPI") == std::string::npos)
    GTEST_SKIP() << "mpirun is not Open MPI";
  const std::string dir = test::temp_dir("bench-scaling-root");
  const std::string sweep = dir + "/sweep.yaml";
  std::ofstream(sweep) << "name: root\nmodel: {preset: tiny}\nlauncher: mpirun\nplans:\n  - {name: tp2, tensor: 2}\n"
                       << "batch: [1]\nprompt_len: [4]\noutput_len: [2]\n";
  const auto r = test::run_command("env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM " + strata() +
                                   " bench scaling --sweep " + sweep + " --out " + dir + "/out --no-plots");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("refuses to run as root"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out/model")) << "it stops before making the model";
}

}  // namespace
}  // namespace strata
