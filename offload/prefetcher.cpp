// offload/prefetcher.cpp: the staging ring, its worker thread and the slot layout.
// Locking: one mutex guards slot states, the fill queue and the log; fills run unlocked (a slot in
// kFilling belongs to the worker). Waits are condition-variable waits, so acquire() costs nothing
// when the stream keeps ahead of compute.
#include "offload/prefetcher.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::offload {
namespace {

constexpr int64_t kDeviceAlign = 256;

int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void lay_out_slots(std::vector<StreamedLayer>& layers, bool device_is_host, int64_t* slot_bytes,
                   int64_t* staging_bytes) {
  *slot_bytes = 0, *staging_bytes = 0;
  for (StreamedLayer& layer : layers) {
    int64_t page_cursor = 0, packed_cursor = 0;
    // Read layout: a large one-piece disk tensor starts on a fresh page at its file offset's place
    // inside the page, and the next tensor starts after its page-rounded end, so the O_DIRECT read
    // of whole pages touches no other tensor's bytes. Everything else packs at 256 bytes.
    auto page_place = [&](StreamedTensor& t) {
      t.direct = t.tier == Tier::kDisk && t.segments.size() == 1 && t.nbytes >= kDirectMinBytes;
      if (!t.direct) {
        const int64_t off = round_up(page_cursor, kDeviceAlign);
        page_cursor = off + t.nbytes;
        return off;
      }
      const int64_t off = round_up(page_cursor, kDirectAlign) + static_cast<int64_t>(t.segments[0].file_offset % kDirectAlign);
      page_cursor = round_up(off + t.nbytes, kDirectAlign);
      return off;
    };
    for (StreamedTensor& t : layer.tensors) {
      if (device_is_host) {
        t.device_offset = page_place(t);
      } else {
        t.device_offset = round_up(packed_cursor, kDeviceAlign);
        packed_cursor = t.device_offset + t.nbytes;
        if (t.tier == Tier::kDisk) t.staging_offset = page_place(t);
      }
    }
    *slot_bytes = std::max(*slot_bytes, round_up(device_is_host ? page_cursor : packed_cursor, kDeviceAlign));
    if (!device_is_host) *staging_bytes = std::max(*staging_bytes, round_up(page_cursor, kDirectAlign));
  }
}

Prefetcher::Prefetcher(std::vector<StreamedLayer> layers, CopyEngine& engine, int slots, uint8_t* device_ring,
                       int64_t slot_bytes, uint8_t* staging_ring, int64_t staging_bytes, int64_t fill_log_capacity)
    : layers_(std::move(layers)), engine_(engine), device_ring_(device_ring), slot_bytes_(slot_bytes),
      staging_ring_(staging_ring), staging_bytes_(staging_bytes),
      fill_log_capacity_(static_cast<size_t>(std::max<int64_t>(0, fill_log_capacity))) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, !layers_.empty() && slots >= 1 && slots <= static_cast<int>(layers_.size()),
                    "prefetcher needs 1..", layers_.size(), " slots, got ", slots);
  sticky_ = slots == static_cast<int>(layers_.size());
  slots_.resize(static_cast<size_t>(slots));
  queue_.resize(static_cast<size_t>(slots));
  fill_log_.reserve(fill_log_capacity_);
  engine_.set_slots(slots);
  worker_ = std::thread([this] { work(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Prefetcher::enqueue(int slot) {
  slots_[static_cast<size_t>(slot)].state = State::kQueued;
  queue_[(queue_head_ + queue_size_) % queue_.size()] = slot;
  ++queue_size_;
}

void Prefetcher::restart(std::unique_lock<std::mutex>& lock, int64_t i) {
  for (size_t k = 0; k < queue_size_; ++k) slots_[static_cast<size_t>(queue_[(queue_head_ + k) % queue_.size()])].state = State::kEmpty;
  queue_size_ = 0;
  cv_.wait(lock, [&] {
    return std::none_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == State::kFilling; });
  });
  const int64_t n = static_cast<int64_t>(layers_.size());
  for (size_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s].state == State::kInUse) engine_.compute_releases(static_cast<int>(s));
    slots_[s].item = (i + static_cast<int64_t>(s)) % n;
    slots_[s].error = nullptr;
    enqueue(static_cast<int>(s));
  }
  next_slot_ = 0;
  expected_ = i;
  next_item_ = (i + static_cast<int64_t>(slots_.size())) % n;
  started_ = true;
  cv_.notify_all();
}

int Prefetcher::acquire(int64_t i) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, i >= 0 && i < static_cast<int64_t>(layers_.size()), "streamed layer index ",
                    i, " out of range");
  std::unique_lock<std::mutex> lock(mutex_);
  if (!started_ || i != expected_) {
    if (started_) {
      restarts_.fetch_add(1, std::memory_order_relaxed);
      LOG_WARN("offload: layer ", layers_[static_cast<size_t>(i)].layer, " acquired out of order (expected ",
               layers_[static_cast<size_t>(expected_)].layer, "); restarting the prefetch ring there");
    }
    restart(lock, i);
  }
  const int s = next_slot_;
  Slot& slot = slots_[static_cast<size_t>(s)];
  const int64_t t0 = now_ns();
  cv_.wait(lock, [&] { return slot.state == State::kReady || slot.state == State::kFailed; });
  wait_ns_.fetch_add(now_ns() - t0, std::memory_order_relaxed);
  if (slot.state == State::kFailed) {
    std::exception_ptr error = slot.error;
    started_ = false;  // the next acquire refills from scratch (a retry after the file is restored)
    slot.state = State::kEmpty;
    std::rethrow_exception(error);
  }
  slot.state = State::kInUse;
  next_slot_ = (s + 1) % static_cast<int>(slots_.size());
  expected_ = (i + 1) % static_cast<int64_t>(layers_.size());
  acquires_.fetch_add(1, std::memory_order_relaxed);
  lock.unlock();
  engine_.compute_acquires(s);
  return s;
}

void Prefetcher::release(int64_t i) {
  std::unique_lock<std::mutex> lock(mutex_);
  for (size_t s = 0; s < slots_.size(); ++s) {
    Slot& slot = slots_[s];
    if (slot.item != i || slot.state != State::kInUse) continue;
    // Recorded before the refill is queued, so the copy waits for this layer's compute.
    engine_.compute_releases(static_cast<int>(s));
    if (sticky_) {
      slot.state = State::kReady;
      return;
    }
    slot.item = next_item_;
    next_item_ = (next_item_ + 1) % static_cast<int64_t>(layers_.size());
    enqueue(static_cast<int>(s));
    lock.unlock();
    cv_.notify_all();
    return;
  }
}

void Prefetcher::work() {
  for (;;) {
    int s = 0;
    int64_t item = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || queue_size_ > 0; });
      if (stop_) return;
      s = queue_[queue_head_];
      queue_head_ = (queue_head_ + 1) % queue_.size();
      --queue_size_;
      slots_[static_cast<size_t>(s)].state = State::kFilling;
      item = slots_[static_cast<size_t>(s)].item;
    }
    std::exception_ptr error;
    const int64_t t0 = now_ns();
    try {
      fill(item, s);
    } catch (...) {
      error = std::current_exception();
    }
    fill_ns_.fetch_add(now_ns() - t0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Slot& slot = slots_[static_cast<size_t>(s)];
      slot.state = error ? State::kFailed : State::kReady;
      slot.error = error;
      if (!error) {
        fills_.fetch_add(1, std::memory_order_relaxed);
        if (fill_log_.size() < fill_log_capacity_) fill_log_.push_back(layers_[static_cast<size_t>(item)].layer);
      }
    }
    cv_.notify_all();
  }
}

void Prefetcher::fill(int64_t item, int s) {
  const StreamedLayer& layer = layers_[static_cast<size_t>(item)];
  uint8_t* device = slot_data(s);
  uint8_t* staging = staging_ring_ != nullptr ? staging_ring_ + s * staging_bytes_ : nullptr;
  const bool direct_to_device = engine_.device_is_host();
  engine_.begin_fill(s);
  bool staging_waited = false;
  const CheckpointFile* checked = nullptr;
  for (const StreamedTensor& t : layer.tensors) {
    if (t.tier == Tier::kHost) {
      engine_.copy_to_device(device + t.device_offset, t.host, static_cast<size_t>(t.nbytes));
      bytes_host_.fetch_add(t.nbytes, std::memory_order_relaxed);
      continue;
    }
    if (t.file != checked) t.file->check_intact(), checked = t.file;  // a shrunk file errors, never faults
    uint8_t* land = direct_to_device ? device + t.device_offset : staging + t.staging_offset;
    if (!direct_to_device && !staging_waited) engine_.wait_staging_free(s), staging_waited = true;
    for (const Segment& seg : t.segments)
      t.file->read(seg.file_offset, seg.bytes, land + seg.dst_offset, t.direct, t.name);
    if (!direct_to_device) engine_.copy_to_device(device + t.device_offset, land, static_cast<size_t>(t.nbytes));
    bytes_disk_.fetch_add(t.nbytes, std::memory_order_relaxed);
  }
  engine_.end_fill(s);
}

std::vector<int64_t> Prefetcher::fill_order() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fill_log_;
}

PrefetchStats Prefetcher::stats() const {
  PrefetchStats st;
  st.bytes_host = bytes_host_.load();
  st.bytes_disk = bytes_disk_.load();
  st.fills = fills_.load();
  st.acquires = acquires_.load();
  st.restarts = restarts_.load();
  st.acquire_wait_s = static_cast<double>(wait_ns_.load()) * 1e-9;
  st.fill_s = static_cast<double>(fill_ns_.load()) * 1e-9;
  return st;
}

}  // namespace strata::offload
