// offload/cuda/cuda_copy_engine.cu: CopyEngine on a CUDA copy stream with per-slot events; pinned
// host memory (cudaHostAlloc) for the host tier and the disk staging ring, cudaMalloc for the pool.
// A .cu file so nvcc supplies the toolkit headers (strata_offload itself links no CUDA target).
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "offload/cuda/cuda_copy_engine.h"
#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device_handles.h"
#include "runtime/log.h"

namespace strata::offload {
namespace {

int device_of(const Backend& backend) {
  STRATA_CHECK(backend.device() == Device::kCuda && backend.device_index() >= 0,
               "the CUDA copy engine needs the CUDA backend, got ", backend.name());
  return backend.device_index();
}

class CudaCopyEngine final : public CopyEngine {
 public:
  explicit CudaCopyEngine(Backend& backend)
      : device_(device_of(backend)),
        compute_(static_cast<cudaStream_t>(cuda_backend_stream(backend))),
        copy_(device_) {}
  ~CudaCopyEngine() override {
    const cudaError_t status = cudaStreamSynchronize(copy_.get());
    if (status != cudaSuccess) LOG_WARN("offload copy stream: ", cudaGetErrorString(status));
  }

  std::string name() const override { return cat("cuda:", device_, " (copy stream + events)"); }
  Device device() const override { return Device::kCuda; }
  bool device_is_host() const override { return false; }
  int64_t device_memory() const override {
    bind();
    size_t free = 0, total = 0;
    CHECK_CUDA(cudaMemGetInfo(&free, &total));
    return static_cast<int64_t>(total);
  }
  std::shared_ptr<void> allocate_device(size_t bytes) override {
    auto buffer = std::make_shared<cuda::DeviceBuffer>(bytes, device_);
    return std::shared_ptr<void>(buffer, buffer->get());
  }
  std::shared_ptr<void> allocate_host(size_t bytes) override {
    bind();
    void* p = nullptr;
    const cudaError_t status = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
    STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, status == cudaSuccess, "cannot pin ", bytes,
                      " bytes of host memory for the offload host tier (", cudaGetErrorString(status),
                      "); lower host_budget so more layers stream from disk, or raise the memlock limit");
    return std::shared_ptr<void>(p, [](void* q) {
      const cudaError_t s = cudaFreeHost(q);
      if (s != cudaSuccess) LOG_WARN("cudaFreeHost: ", cudaGetErrorString(s));
    });
  }
  void set_slots(int slots) override {
    bind();
    filled_.clear(), free_.clear();
    for (int s = 0; s < slots; ++s) filled_.emplace_back(false), free_.emplace_back(false);
  }

  void begin_fill(int slot) override {
    bind();  // the prefetch worker is its own thread: the current device is per thread
    CHECK_CUDA(cudaStreamWaitEvent(copy_.get(), free_[slot].get(), 0));
  }
  void wait_staging_free(int slot) override { CHECK_CUDA(cudaEventSynchronize(filled_[slot].get())); }
  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_.get()));
  }
  void end_fill(int slot) override { CHECK_CUDA(cudaEventRecord(filled_[slot].get(), copy_.get())); }

  void compute_acquires(int slot) override { CHECK_CUDA(cudaStreamWaitEvent(compute_, filled_[slot].get(), 0)); }
  void compute_releases(int slot) override { CHECK_CUDA(cudaEventRecord(free_[slot].get(), compute_)); }
  void drain() override { CHECK_CUDA(cudaStreamSynchronize(copy_.get())); }

 private:
  void bind() const { CHECK_CUDA(cudaSetDevice(device_)); }
  int device_;
  cudaStream_t compute_;
  cuda::CudaStream copy_;
  std::vector<cuda::CudaEvent> filled_, free_;  // never-recorded events are complete: the first waits pass
};

}  // namespace

std::unique_ptr<CopyEngine> make_cuda_copy_engine(Backend& backend) { return std::make_unique<CudaCopyEngine>(backend); }

}  // namespace strata::offload
