// runtime/cuda/device_handles.h: move-only owners of CUDA handles (stream, event, device memory, cuBLAS
// handle). Destructors never throw: they log a failure and carry on.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace strata::cuda {

// Owns one non-blocking stream on one device.
class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(CudaStream&& other) noexcept;
  CudaStream& operator=(CudaStream&& other) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Owns one event (timing enabled unless `timing` is false).
class CudaEvent {
 public:
  explicit CudaEvent(bool timing = true);
  ~CudaEvent();
  CudaEvent(CudaEvent&& other) noexcept;
  CudaEvent& operator=(CudaEvent&& other) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Owns `bytes` of device memory from cudaMalloc (256-byte aligned). cudaFree synchronises the device,
// so owners of per-step temporaries should allocate once and reuse.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, int device);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void reset() noexcept;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = 0;
};

// Owns one cuBLAS handle bound to a stream.
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  ~CublasHandle();
  CublasHandle(CublasHandle&& other) noexcept;
  CublasHandle& operator=(CublasHandle&& other) noexcept;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

}  // namespace strata::cuda

namespace strata::cuda {

// Page-locked, device-mapped host memory from cudaHostAlloc that grows on demand (small per-step
// transfers: sampling parameters in, tokens out). Growing first waits for `stream`, which may still read or
// write it.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* get(size_t bytes, cudaStream_t stream);
  // The device's address of `host` (inside the buffer): the memory is mapped, so kernels can read and
  // write it over the bus without a copy.
  void* device_view(void* host) const;

 private:
  void* ptr_ = nullptr;
  void* device_ptr_ = nullptr;  // ptr_ as the device addresses it
  size_t bytes_ = 0;
};

// A device buffer that grows on demand (temporaries of one stream: conversions, dequantized weight
// chunks, split-K partials). Growing waits for `stream` first, since queued kernels may still read the
// old buffer.
class GrowableBuffer {
 public:
  explicit GrowableBuffer(int device) : device_(device) {}
  void* get(size_t bytes, cudaStream_t stream);

 private:
  int device_;
  DeviceBuffer buffer_;
};

}  // namespace strata::cuda
