// offload/copy_engine.h: how streamed bytes reach the compute device, and the memory they land in.
// The CPU engine (here) copies with memcpy on the prefetch worker, its "device" memory being host
// memory, so CI runs the whole offload path; the CUDA engine (offload/cuda/) copies on its own
// stream and orders it against the backend's compute stream with one event pair per ring slot.
// Threading: fill-side calls come from the prefetch worker only, compute-side calls from the
// thread running the model.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "runtime/backend.h"

namespace strata::offload {

class CopyEngine {
 public:
  virtual ~CopyEngine() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // True when device memory is host memory (CPU): disk reads land in the slot directly.
  virtual bool device_is_host() const = 0;
  // Bytes of memory on the compute device (resolves "40%" budgets): physical RAM for the CPU.
  virtual int64_t device_memory() const = 0;
  // Memory of the compute device (the pool's arena) and host memory copies run fastest from
  // (pinned under CUDA). Both freed when the last reference goes; allocation errors are kOutOfMemory.
  virtual std::shared_ptr<void> allocate_device(size_t bytes) = 0;
  virtual std::shared_ptr<void> allocate_host(size_t bytes) = 0;
  // Sizes the per-slot synchronisation (once, before any fill).
  virtual void set_slots(int slots) = 0;

  // Fill side (prefetch worker). Before writing device slot `slot`: compute must be done with it.
  virtual void begin_fill(int slot) = 0;
  // Before overwriting host staging `slot` (disk tier under CUDA): its last copy must be done.
  virtual void wait_staging_free(int slot) = 0;
  virtual void copy_to_device(void* device_dst, const void* host_src, size_t bytes) = 0;
  // After the slot's copies: marks the fill (CUDA: records the slot's event on the copy stream).
  virtual void end_fill(int slot) = 0;

  // Compute side (model thread). Work issued after this sees the slot's bytes.
  virtual void compute_acquires(int slot) = 0;
  // Work issued before this is the last to read the slot until its next fill.
  virtual void compute_releases(int slot) = 0;
  // Waits for every copy issued so far (teardown, before the memory goes).
  virtual void drain() = 0;
};

// The engine for `backend`: CPU (memcpy) for the CPU backend, CUDA (copy stream + events) for the
// CUDA backend when this binary has it; a clear error otherwise.
std::unique_ptr<CopyEngine> make_copy_engine(Backend& backend);
std::unique_ptr<CopyEngine> make_cpu_copy_engine();

}  // namespace strata::offload
