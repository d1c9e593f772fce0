// tests/launcher/gpu_monitor_test.cpp: the GPU series of /metrics: one line per GPU and series, labels
// escaped, values as sampled; and, on a machine with NVML, a live sample that is self-consistent.
#include "launcher/gpu_monitor.h"

#include <gtest/gtest.h>

#include <sstream>

namespace strata::launcher {
namespace {

TEST(GpuMetrics, OneLinePerGpuAndSeriesWithEscapedLabels) {
  std::vector<GpuSample> samples(2);
  samples[0] = {0, "NVIDIA H100 80GB HBM3", 0.75, 1000, 80000};
  samples[1] = {1, "odd \"name\"\\", 0.0, 0, 4096};
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

}  // namespace
}  // namespace strata::launcher
