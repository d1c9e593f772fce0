// offload/prefetcher.h: streams the layers that live off the device through a ring of slots in
// device memory. A worker thread fills slots in layer order (wrapping from the last streamed layer
// to the first for the next step); acquire() waits for a layer's slot, release() recycles it for
// the layer `slots` ahead. Everything is allocated up front: acquire and release never allocate.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "offload/copy_engine.h"
#include "offload/disk_reader.h"
#include "offload/residency.h"
#include "offload/shard_layout.h"

namespace strata::offload {

// One tensor of a streamed layer: where its bytes come from and where they land in a slot.
struct StreamedTensor {
  std::string name;
  Tier tier = Tier::kHost;
  int64_t nbytes = 0;
  const uint8_t* host = nullptr;         // host tier: the pinned host copy
  const CheckpointFile* file = nullptr;  // disk tier
  std::vector<Segment> segments;         // disk tier: file ranges; dst_offset is within the tensor
  int64_t device_offset = 0;             // in a device slot (set by lay_out_slots)
  int64_t staging_offset = 0;            // in a host staging slot (disk tier, CUDA)
  bool direct = false;                   // its landing place suits an O_DIRECT read (lay_out_slots)
};

struct StreamedLayer {
  int64_t layer = 0;
  std::vector<StreamedTensor> tensors;
};

// Assigns device (and staging) offsets. Large disk tensors read in one piece sit where an O_DIRECT
// read of whole pages can land them: at the file offset's position inside a page of their own; the
// rest 256-byte aligned (CUDA kernels' vector loads). Where device memory
// is host memory (CPU) disk reads land in the device slot; else in staging, and the device slot is
// packed. Returns bytes per device slot and per staging slot (0 when no staging is needed); both
// are within residency.h's slot_cost() sum, so the placement's ring size holds.
void lay_out_slots(std::vector<StreamedLayer>& layers, bool device_is_host, int64_t* slot_bytes,
                   int64_t* staging_bytes);

struct PrefetchStats {
  int64_t bytes_host = 0, bytes_disk = 0;  // streamed so far, per source tier
  int64_t fills = 0, acquires = 0, restarts = 0;
  double acquire_wait_s = 0;  // compute thread blocked in acquire (the stream fell behind)
  double fill_s = 0;          // worker busy filling slots
};

class Prefetcher {
 public:
  // `device_ring` holds slots x slot_bytes; `staging_ring` slots x staging_bytes (may be null).
  Prefetcher(std::vector<StreamedLayer> layers, CopyEngine& engine, int slots, uint8_t* device_ring, int64_t slot_bytes,
             uint8_t* staging_ring, int64_t staging_bytes, int64_t fill_log_capacity);
  ~Prefetcher();  // stops the worker after its current fill; never throws
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Index `i` into the streamed layers: waits until its slot is filled and returns the slot. Out of
  // order (a step that failed half way) restarts the ring at `i`. Rethrows a fill's error.
  int acquire(int64_t i);
  void release(int64_t i);
  uint8_t* slot_data(int slot) const { return device_ring_ + slot * slot_bytes_; }
  int slots() const { return static_cast<int>(slots_.size()); }

  // Layers in the order their fills completed (the first fill_log_capacity of them).
  std::vector<int64_t> fill_order() const;
  PrefetchStats stats() const;

 private:
  enum class State : uint8_t { kEmpty, kQueued, kFilling, kReady, kInUse, kFailed };
  struct Slot {
    int64_t item = -1;
    State state = State::kEmpty;
    std::exception_ptr error;
  };
  void restart(std::unique_lock<std::mutex>& lock, int64_t i);
  void enqueue(int slot);
  void work();
  void fill(int64_t item, int slot);

  std::vector<StreamedLayer> layers_;
  CopyEngine& engine_;
  uint8_t* device_ring_;
  int64_t slot_bytes_;
  uint8_t* staging_ring_;
  int64_t staging_bytes_;
  bool sticky_;  // every streamed layer has a slot of its own: filled once, never recycled

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  std::vector<int> queue_;  // ring of slot indices, capacity = slots
  size_t queue_head_ = 0, queue_size_ = 0;
  bool started_ = false, stop_ = false;
  int64_t expected_ = 0;  // next index acquire() expects
  int next_slot_ = 0;     // slot holding expected_
  int64_t next_item_ = 0; // next index a released slot is refilled with
  std::vector<int64_t> fill_log_;
  size_t fill_log_capacity_;

  std::atomic<int64_t> bytes_host_{0}, bytes_disk_{0}, fills_{0}, acquires_{0}, restarts_{0};
  std::atomic<int64_t> wait_ns_{0}, fill_ns_{0};
  std::thread worker_;
};

}  // namespace strata::offload
