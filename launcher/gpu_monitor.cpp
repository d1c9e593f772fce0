// launcher/gpu_monitor.cpp: NVML through dlopen. Only the few entry points /metrics needs are resolved;
// their signatures are NVML's stable C ABI (the _v2 names where NVML versioned them).
#include "launcher/gpu_monitor.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>

#include "runtime/error.h"
#ifdef STRATA_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif
#include "runtime/log.h"
#include "runtime/word_codec.h"

namespace strata::launcher {
namespace {

using NvmlReturn = int;  // nvmlReturn_t: 0 is success
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlUtilization {
  unsigned int gpu, memory;  // percent
};
struct NvmlMemory {
  unsigned long long total, free, used;  // bytes
};

struct NvmlApi {
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  const char* (*error_string)(NvmlReturn) = nullptr;
  NvmlReturn (*device_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*device_by_bus)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*device_name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
};

// Reports the call, file:line (STRATA_THROW records it) and NVML's own message.
#define NVML_CHECK(api, call)                                                                               \
  do {                                                                                                       \
    const NvmlReturn nvml_rc_ = (call);                                                                     \
    if (nvml_rc_ != 0)                                                                                      \
      STRATA_THROW(ErrorKind::kCuda, #call, " failed: ",                                                   \
                   (api).error_string != nullptr ? (api).error_string(nvml_rc_) : "NVML error", " (", nvml_rc_, \
                   ")");                                                                                     \
  } while (0)

class NvmlMonitor final : public GpuMonitor {
 public:
  NvmlMonitor(void* library, const NvmlApi& api, unsigned int count) : library_(library), api_(api), count_(count) {}
  ~NvmlMonitor() override {
    api_.shutdown();
    dlclose(library_);
  }

  std::vector<GpuSample> sample() override {
    std::vector<GpuSample> out;
    for (unsigned int i = 0; i < count_; ++i) {
      NvmlDevice device = nullptr;
      NVML_CHECK(api_, api_.device_by_index(i, &device));
      out.push_back(read(device, static_cast<int>(i)));
    }
    return out;
  }

  GpuSample sample_bus(const std::string& pci_bus_id) override {
    NvmlDevice device = nullptr;
    NVML_CHECK(api_, api_.device_by_bus(pci_bus_id.c_str(), &device));
    for (unsigned int i = 0; i < count_; ++i) {  // NVML's index of that card, for the gpu label
      NvmlDevice other = nullptr;
      NVML_CHECK(api_, api_.device_by_index(i, &other));
      if (other == device) return read(device, static_cast<int>(i));
    }
    return read(device, -1);
  }

 private:
  GpuSample read(NvmlDevice device, int index) {
    GpuSample s;
    s.index = index;
    char name[96] = {};
    NVML_CHECK(api_, api_.device_name(device, name, sizeof(name)));
    s.name = name;
    NvmlUtilization u{};
    NVML_CHECK(api_, api_.utilization(device, &u));
    s.utilization = u.gpu / 100.0;
    NvmlMemory m{};
    NVML_CHECK(api_, api_.memory(device, &m));
    s.memory_used = static_cast<int64_t>(m.used);
    s.memory_total = static_cast<int64_t>(m.total);
    return s;
  }

  void* library_;
  NvmlApi api_;
  unsigned int count_;
};

template <typename Fn>
bool resolve(void* library, const char* symbol, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(library, symbol));
  return fn != nullptr;
}

std::string escape_label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::unique_ptr<GpuMonitor> GpuMonitor::open() {
  void* library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    LOG_DEBUG("no NVML (", dlerror(), "): /metrics has no GPU series");
    return nullptr;
  }
  NvmlApi api;
  const bool ok = resolve(library, "nvmlInit_v2", api.init) && resolve(library, "nvmlShutdown", api.shutdown) &&
                  resolve(library, "nvmlErrorString", api.error_string) &&
                  resolve(library, "nvmlDeviceGetCount_v2", api.device_count) &&
                  resolve(library, "nvmlDeviceGetHandleByIndex_v2", api.device_by_index) &&
                  resolve(library, "nvmlDeviceGetHandleByPciBusId_v2", api.device_by_bus) &&
                  resolve(library, "nvmlDeviceGetName", api.device_name) &&
                  resolve(library, "nvmlDeviceGetUtilizationRates", api.utilization) &&
                  resolve(library, "nvmlDeviceGetMemoryInfo", api.memory);
  unsigned int count = 0;
  if (!ok || api.init() != 0) {
    LOG_WARN("NVML is installed but ", ok ? "nvmlInit failed" : "lacks an entry point", ": /metrics has no GPU series");
    dlclose(library);
    return nullptr;
  }
  if (api.device_count(&count) != 0 || count == 0) {
    api.shutdown();
    dlclose(library);
    return nullptr;
  }
  return std::make_unique<NvmlMonitor>(library, api, count);
}

namespace {
constexpr int32_t kRankGpusMagic = 0x53475031;  // "SGP1"
}  // namespace

std::vector<int32_t> encode_rank_gpus(const std::vector<GpuSample>& samples) {
  WordWriter w;
  w.i32(kRankGpusMagic);
  w.i32(static_cast<int32_t>(samples.size()));
  for (const GpuSample& s : samples) {
    w.i32(s.index);
    w.i32(s.rank);
    w.str(s.name);
    w.str(s.host);
    w.f64(s.utilization);
    w.i64(s.memory_used);
    w.i64(s.memory_total);
  }
  return w.take();
}

std::vector<GpuSample> decode_rank_gpus(const std::vector<int32_t>& words) {
  std::vector<GpuSample> out;
  if (words.empty()) return out;  // a rank without a GPU (or whose NVML failed) sends nothing
  WordReader in(words, "rank GPU telemetry", "every rank must run the same strata build");
  STRATA_CHECK_KIND(ErrorKind::kComm, in.i32() == kRankGpusMagic, "rank GPU telemetry: not a GPU sample message");
  const size_t n = in.count();
  for (size_t i = 0; i < n; ++i) {
    GpuSample s;
    s.index = in.i32();
    s.rank = in.i32();
    s.name = in.str();
    s.host = in.str();
    s.utilization = in.f64();
    s.memory_used = in.i64();
    s.memory_total = in.i64();
    out.push_back(std::move(s));
  }
  return out;
}

std::string render_gpu_metrics(const std::vector<GpuSample>& samples) {
  if (samples.empty()) return "";
  std::string out;
  auto series = [&](const char* name, const char* help, auto value) {
    out += cat("# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n");
    for (const GpuSample& s : samples) {
      const std::string rank = s.rank >= 0 ? cat("rank=\"", s.rank, "\",host=\"", escape_label(s.host), "\",") : "";
      out += cat(name, "{", rank, "gpu=\"", s.index, "\",name=\"", escape_label(s.name), "\"} ", value(s), "\n");
    }
  };
  series("strata_gpu_utilization_ratio", "fraction of NVML's last sample period in which a kernel ran, per GPU "
         "(per rank where labelled so)", [](const GpuSample& s) { return s.utilization; });
  series("strata_gpu_memory_used_bytes", "device memory in use (every process), per GPU (per rank where labelled so)",
         [](const GpuSample& s) { return s.memory_used; });
  series("strata_gpu_memory_total_bytes", "device memory, per GPU (per rank where labelled so)",
         [](const GpuSample& s) { return s.memory_total; });
  return out;
}

std::function<std::vector<int32_t>()> rank_gpu_telemetry(const Backend& backend, int world_rank) {
#ifdef STRATA_HAVE_CUDA
  if (backend.device() != Device::kCuda) return {};
  std::shared_ptr<GpuMonitor> monitor = GpuMonitor::open();
  if (!monitor) return {};
  const std::string bus_id = cuda_pci_bus_id(backend.device_index());
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown");
  return [monitor, bus_id, world_rank, host = std::string(host)] {
    GpuSample s = monitor->sample_bus(bus_id);
    s.rank = world_rank;
    s.host = host;
    return encode_rank_gpus({s});
  };
#else
  (void)backend;
  (void)world_rank;
  return {};
#endif
}

std::string render_rank_gpu_metrics(const std::vector<std::vector<int32_t>>& per_rank) {
  std::vector<GpuSample> all;
  for (const std::vector<int32_t>& words : per_rank) {
    try {
      for (GpuSample& s : decode_rank_gpus(words)) all.push_back(std::move(s));
    } catch (const std::exception& e) {
      LOG_WARN("GPU metrics: ", e.what());
    }
  }
  return render_gpu_metrics(all);
}

}  // namespace strata::launcher
