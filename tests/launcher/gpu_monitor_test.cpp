// tests/launcher/gpu_monitor_test.cpp: the GPU series of /metrics: one line per GPU and series, labels
// escaped, values as sampled; and, on a machine with NVML, a live sample that is self-consistent.
#include "launcher/gpu_monitor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "runtime/error.h"
#ifdef STRATA_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif

namespace strata::launcher {
namespace {

TEST(GpuMetrics, OneLinePerGpuAndSeriesWithEscapedLabels) {
  std::vector<GpuSample> samples(2);
  samples[0] = {0, "NVIDIA H100 80GB HBM3", 0.75, 1000, 80000, -1, ""};
  samples[1] = {1, "odd \"name\"\\", 0.0, 0, 4096, -1, ""};
  const std::string text = render_gpu_metrics(samples);
  EXPECT_NE(text.find("strata_gpu_utilization_ratio{gpu=\"0\",name=\"NVIDIA H100 80GB HBM3\"} 0.75\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("strata_gpu_memory_used_bytes{gpu=\"0\",name=\"NVIDIA H100 80GB HBM3\"} 1000\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("strata_gpu_memory_total_bytes{gpu=\"1\",name=\"odd \\\"name\\\"\\\\\"} 4096\n"),
            std::string::npos) << text;
  int samples_lines = 0, type_lines = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) ++type_lines;
    if (line.rfind("strata_gpu_", 0) == 0) ++samples_lines;
  }
  EXPECT_EQ(type_lines, 3);
  EXPECT_EQ(samples_lines, 6);
  EXPECT_EQ(render_gpu_metrics({}), "");
}

// Per-rank samples travel as words from every rank to the driver; what arrives renders with rank and
// host labels, one line per rank and series; a rank without a GPU sends nothing and adds no line.
TEST(GpuMetrics, RankSamplesSurviveTheWordsAndCarryRankAndHost) {
  GpuSample a{3, "NVIDIA H100 80GB HBM3", 0.5, 123456789012, 85520809984, 5, "node-b"};
  GpuSample b{0, "NVIDIA H100 80GB HBM3", 1.0, 1, 2, 0, "node-a"};
  const std::vector<int32_t> words = encode_rank_gpus({a});
  const std::vector<GpuSample> back = decode_rank_gpus(words);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].index, 3);
  EXPECT_EQ(back[0].rank, 5);
  EXPECT_EQ(back[0].name, a.name);
  EXPECT_EQ(back[0].host, "node-b");
  EXPECT_EQ(back[0].utilization, 0.5);
  EXPECT_EQ(back[0].memory_used, 123456789012);
  EXPECT_EQ(back[0].memory_total, 85520809984);
  const std::string text = render_rank_gpu_metrics({encode_rank_gpus({b}), {}, words});
  EXPECT_NE(text.find("strata_gpu_memory_used_bytes{rank=\"5\",host=\"node-b\",gpu=\"3\",name=\"NVIDIA H100 80GB HBM3\"} "
                      "123456789012\n"), std::string::npos) << text;
  EXPECT_NE(text.find("strata_gpu_utilization_ratio{rank=\"0\",host=\"node-a\",gpu=\"0\","), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3 * 2 + 3 * 2);  // HELP + TYPE and 2 ranks per series
  // Words that are not a sample message are dropped (with a warning), not rendered as garbage.
  EXPECT_EQ(render_rank_gpu_metrics({{1, 2, 3}}), "");
  EXPECT_THROW(decode_rank_gpus({1, 2, 3}), Error);
}

TEST(GpuMetrics, LiveSampleWhereNvmlIsPresent) {
  const std::unique_ptr<GpuMonitor> monitor = GpuMonitor::open();
  if (!monitor) GTEST_SKIP() << "no NVML or no GPU on this machine";
  const std::vector<GpuSample> samples = monitor->sample();
  ASSERT_FALSE(samples.empty());
  for (const GpuSample& s : samples) {
    EXPECT_FALSE(s.name.empty());
    EXPECT_GT(s.memory_total, int64_t{1} << 30) << s.name;
    EXPECT_LE(s.memory_used, s.memory_total);
    EXPECT_GE(s.utilization, 0.0);
    EXPECT_LE(s.utilization, 1.0);
  }
}

// The card a CUDA rank runs on, found by its PCI bus id, is one of NVML's list.
TEST(GpuMetrics, RankTelemetryNamesTheBackendsCard) {
#ifdef STRATA_HAVE_CUDA
  if (cuda_device_count() == 0 || !GpuMonitor::open()) GTEST_SKIP() << "no GPU or no NVML";
  const std::unique_ptr<Backend> backend = make_cuda_backend(0);
  const auto source = rank_gpu_telemetry(*backend, 4);
  ASSERT_TRUE(source);
  const std::vector<GpuSample> got = decode_rank_gpus(source());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].rank, 4);
  EXPECT_FALSE(got[0].host.empty());
  EXPECT_GE(got[0].index, 0);
  EXPECT_GT(got[0].memory_total, int64_t{1} << 30);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace strata::launcher
