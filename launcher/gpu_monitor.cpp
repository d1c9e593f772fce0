// launcher/gpu_monitor.cpp: NVML through dlopen. Only the few entry points /metrics needs are resolved;
// their signatures are NVML's stable C ABI (the _v2 names where NVML versioned them).
#include "launcher/gpu_monitor.h"

#include <dlfcn.h>

#include "runtime/error.h"
#include "runtime/log.h"

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
      GpuSample s;
      s.index = static_cast<int>(i);
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
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
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

std::string render_gpu_metrics(const std::vector<GpuSample>& samples) {
  if (samples.empty()) return "";
  std::string out;
  auto series = [&](const char* name, const char* help, auto value) {
    out += cat("# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n");
    for (const GpuSample& s : samples)
      out += cat(name, "{gpu=\"", s.index, "\",name=\"", escape_label(s.name), "\"} ", value(s), "\n");
  };
  series("strata_gpu_utilization_ratio", "fraction of NVML's last sample period in which a kernel ran, per GPU of "
         "the serving rank's host", [](const GpuSample& s) { return s.utilization; });
  series("strata_gpu_memory_used_bytes", "device memory in use (every process), per GPU of the serving rank's host",
         [](const GpuSample& s) { return s.memory_used; });
  series("strata_gpu_memory_total_bytes", "device memory, per GPU of the serving rank's host",
         [](const GpuSample& s) { return s.memory_total; });
  return out;
}

}  // namespace strata::launcher
