// launcher/gpu_monitor.h: GPU utilization and memory from NVML for /metrics. NVML is loaded at run
// time (libnvidia-ml.so.1 ships with the driver), so the same binary runs where there is no GPU: open()
// then returns nullptr and /metrics has no GPU series.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace strata::launcher {

struct GpuSample {
  int index = 0;         // NVML's index on this host
  std::string name;      // e.g. "NVIDIA H100 80GB HBM3"
  double utilization = 0;  // fraction of the last sample period a kernel ran, 0..1
  int64_t memory_used = 0, memory_total = 0;  // bytes
};

class GpuMonitor {
 public:
  // nullptr (with a debug log line) where NVML is missing or finds no GPU.
  static std::unique_ptr<GpuMonitor> open();
  virtual ~GpuMonitor() = default;
  // Every GPU of this host; an NVML failure throws strata::Error naming the call.
  virtual std::vector<GpuSample> sample() = 0;
};

// Prometheus series for `samples` (strata_gpu_utilization_ratio, strata_gpu_memory_used_bytes,
// strata_gpu_memory_total_bytes, labelled gpu and name); empty for none.
std::string render_gpu_metrics(const std::vector<GpuSample>& samples);

}  // namespace strata::launcher
