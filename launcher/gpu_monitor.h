// launcher/gpu_monitor.h: GPU utilization and memory from NVML for /metrics. NVML is loaded at run
// time (libnvidia-ml.so.1 ships with the driver), so the same binary runs where there is no GPU: open()
// then returns nullptr and /metrics has no GPU series.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"

namespace strata::launcher {

struct GpuSample {
  int index = 0;         // NVML's index on this host
  std::string name;      // e.g. "NVIDIA H100 80GB HBM3"
  double utilization = 0;  // fraction of the last sample period a kernel ran, 0..1
  int64_t memory_used = 0, memory_total = 0;  // bytes
  int rank = -1;         // per-rank samples: the world rank whose device this is, and its host
  std::string host;
};

class GpuMonitor {
 public:
  // nullptr (with a debug log line) where NVML is missing or finds no GPU.
  static std::unique_ptr<GpuMonitor> open();
  virtual ~GpuMonitor() = default;
  // Every GPU of this host; an NVML failure throws strata::Error naming the call.
  virtual std::vector<GpuSample> sample() = 0;
  // The GPU whose PCI bus id is `pci_bus_id` (as cudaDeviceGetPCIBusId writes it): NVML's indices need
  // not be CUDA's (CUDA_VISIBLE_DEVICES, ordering), the bus id is the same card in both.
  virtual GpuSample sample_bus(const std::string& pci_bus_id) = 0;
};

// A rank's samples as flat words for Engine::set_telemetry (runtime/word_codec.h), and back; decode
// throws Error(kComm) on words that are not such a message.
std::vector<int32_t> encode_rank_gpus(const std::vector<GpuSample>& samples);
std::vector<GpuSample> decode_rank_gpus(const std::vector<int32_t>& words);

// Prometheus series for `samples` (strata_gpu_utilization_ratio, strata_gpu_memory_used_bytes,
// strata_gpu_memory_total_bytes, labelled gpu and name, and rank and host for per-rank samples); empty
// for none.
std::string render_gpu_metrics(const std::vector<GpuSample>& samples);

// Seconds between gathers of every rank's GPU sample onto its replica's driver (a step-time collective:
// a few small words, rare enough not to show in step times).
constexpr double kRankGpuTelemetryInterval = 2.0;

// This rank's telemetry source for Engine::set_telemetry: the sample of the card `backend` runs on,
// labelled with `world_rank` and this host's name. Empty (no source) where the backend is not CUDA or
// NVML is missing.
std::function<std::vector<int32_t>()> rank_gpu_telemetry(const Backend& backend, int world_rank);

// The series of every rank's sample (Engine::rank_telemetry); words a rank could not decode are skipped
// with a warning.
std::string render_rank_gpu_metrics(const std::vector<std::vector<int32_t>>& per_rank);

}  // namespace strata::launcher
