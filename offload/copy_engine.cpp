// offload/copy_engine.cpp: the CPU copy engine and the seam that picks an engine for a backend.
#include "offload/copy_engine.h"

#include <algorithm>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"
#ifdef STRATA_HAVE_CUDA
#include "offload/cuda/cuda_copy_engine.h"
#endif

namespace strata::offload {
namespace {

std::shared_ptr<void> aligned_host(size_t bytes, const char* what) {
  constexpr size_t kAlign = 4096;  // page-aligned: O_DIRECT reads may land here
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, p != nullptr, "cannot allocate ", bytes, " bytes of ", what,
                    " memory; lower the offload budgets or free host memory");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

// CPU stand-in for a device: the compute pool is host memory, copies are memcpy on the prefetch
// worker, and the CPU backend computes synchronously, so release() already means "done reading".
class CpuCopyEngine final : public CopyEngine {
 public:
  std::string name() const override { return "cpu (memcpy)"; }
  Device device() const override { return Device::kCpu; }
  bool device_is_host() const override { return true; }
  int64_t device_memory() const override {
    return static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
  }
  std::shared_ptr<void> allocate_device(size_t bytes) override { return aligned_host(bytes, "compute pool"); }
  std::shared_ptr<void> allocate_host(size_t bytes) override { return aligned_host(bytes, "host tier"); }
  void set_slots(int) override {}
  void begin_fill(int) override {}
  void wait_staging_free(int) override {}
  void copy_to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void end_fill(int) override {}
  void compute_acquires(int) override {}
  void compute_releases(int) override {}
  void drain() override {}
};

}  // namespace

std::unique_ptr<CopyEngine> make_cpu_copy_engine() { return std::make_unique<CpuCopyEngine>(); }

std::unique_ptr<CopyEngine> make_copy_engine(Backend& backend) {
  if (backend.device() == Device::kCpu) return make_cpu_copy_engine();
#ifdef STRATA_HAVE_CUDA
  return make_cuda_copy_engine(backend);
#else
  STRATA_THROW(ErrorKind::kInvalidArgument, "weight offload for backend ", backend.name(),
               " needs the CUDA copy engine, which is not built into this binary; rebuild with -DSTRATA_CUDA=ON");
#endif
}

}  // namespace strata::offload
