// runtime/cuda/device_handles.cpp: the owners of CUDA handles, and the cuBLAS status strings.
#include "runtime/cuda/device_handles.h"

#include <algorithm>
#include <utility>

#include "runtime/cuda/check_cuda.h"
#include "runtime/log.h"

namespace strata::cuda {

const char* cublas_status_string(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (is the CUDA driver working?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (device out of memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad shape, leading dimension or type)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH (feature not supported on this GPU)";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED (kernel failed to launch or run)";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED (type combination not supported)";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}

namespace {
void log_failure(const char* what, cudaError_t status) {
  if (status != cudaSuccess) LOG_ERROR(what, " failed: ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}
}  // namespace

CudaStream::CudaStream(int device) {
  CHECK_CUDA(cudaSetDevice(device));
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}
CudaStream::~CudaStream() {
  if (stream_ != nullptr) log_failure("cudaStreamDestroy", cudaStreamDestroy(stream_));
}
CudaStream::CudaStream(CudaStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
CudaStream& CudaStream::operator=(CudaStream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) log_failure("cudaStreamDestroy", cudaStreamDestroy(stream_));
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

CudaEvent::CudaEvent(bool timing) {
  CHECK_CUDA(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
CudaEvent::~CudaEvent() {
  if (event_ != nullptr) log_failure("cudaEventDestroy", cudaEventDestroy(event_));
}
CudaEvent::CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
CudaEvent& CudaEvent::operator=(CudaEvent&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) log_failure("cudaEventDestroy", cudaEventDestroy(event_));
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

DeviceBuffer::DeviceBuffer(size_t bytes, int device) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  CHECK_CUDA(cudaSetDevice(device));
  const cudaError_t status = cudaMalloc(&ptr_, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free allocation error
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    STRATA_THROW(ErrorKind::kOutOfMemory, "CUDA error in cudaMalloc(", bytes, " bytes) on device ", device, ": ",
                 cudaGetErrorString(status), "; ", free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                 " MiB. Lower the batch size, the KV cache size or the GPU weight budget.");
  }
}
void DeviceBuffer::reset() noexcept {
  if (ptr_ != nullptr) {
    int current = 0;
    (void)cudaGetDevice(&current);
    if (current != device_) (void)cudaSetDevice(device_);
    log_failure("cudaFree", cudaFree(ptr_));
    if (current != device_) (void)cudaSetDevice(current);
  }
  ptr_ = nullptr;
  bytes_ = 0;
}
DeviceBuffer::~DeviceBuffer() { reset(); }
DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)), device_(other.device_) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  CHECK_CUBLAS(cublasCreate(&handle_));
  CHECK_CUBLAS(cublasSetStream(handle_, stream));
}
CublasHandle::~CublasHandle() {
  if (handle_ != nullptr) {
    const cublasStatus_t status = cublasDestroy(handle_);
    if (status != CUBLAS_STATUS_SUCCESS) LOG_ERROR("cublasDestroy failed: ", cublas_status_string(status));
  }
}
CublasHandle::CublasHandle(CublasHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
CublasHandle& CublasHandle::operator=(CublasHandle&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) (void)cublasDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

}  // namespace strata::cuda

namespace strata::cuda {

void* GrowableBuffer::get(size_t bytes, cudaStream_t stream) {
  if (bytes > buffer_.bytes()) {
    CHECK_CUDA(cudaStreamSynchronize(stream));
    buffer_ = DeviceBuffer();  // free first: the old and new buffer need not fit together
    buffer_ = DeviceBuffer(bytes + bytes / 4, device_);  // some headroom against repeated growth
  }
  return buffer_.get();
}

}  // namespace strata::cuda

namespace strata::cuda {

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) {
    const cudaError_t st = cudaFreeHost(ptr_);
    if (st != cudaSuccess) LOG_WARN("cudaFreeHost: ", cudaGetErrorString(st));
  }
}

void* PinnedBuffer::get(size_t bytes, cudaStream_t stream) {
  if (bytes > bytes_) {
    CHECK_CUDA(cudaStreamSynchronize(stream));
    if (ptr_ != nullptr) CHECK_CUDA(cudaFreeHost(ptr_));
    ptr_ = device_ptr_ = nullptr;
    bytes_ = 0;
    const size_t want = std::max<size_t>(bytes + bytes / 4, 4096);
    CHECK_CUDA(cudaHostAlloc(&ptr_, want, cudaHostAllocMapped));
    bytes_ = want;
    CHECK_CUDA(cudaHostGetDevicePointer(&device_ptr_, ptr_, 0));  // once per allocation, not per step
  }
  return ptr_;
}

void* PinnedBuffer::device_view(void* host) const {
  return static_cast<char*>(device_ptr_) + (static_cast<char*>(host) - static_cast<char*>(ptr_));
}

}  // namespace strata::cuda
