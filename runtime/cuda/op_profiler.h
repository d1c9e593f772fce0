// runtime/cuda/op_profiler.h: per-op GPU time of the CUDA backend, for finding which kernel holds a step
// back. Made by the backend when CudaBackendOptions::profile is set (the launcher's --profile-ops or
// STRATA_CUDA_PROFILE=1); then every backend op is bracketed by two events on the
// compute stream and, when the backend goes away, a table (op, calls, total ms, mean us, share, and the first
// call's time apart) goes to stderr. The events cost a few microseconds per op, so profiled runs are slower
// than plain ones.
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace strata::cuda {

class OpProfiler {
 public:
  OpProfiler() = default;
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // Brackets one op: begin() before its launches, end() after; ops do not nest.
  void begin(cudaStream_t stream);
  void end(const std::string& name, cudaStream_t stream);
  // Folds finished ops into the totals (waits for the last recorded event).
  void collect();
  std::string report();

 private:
  struct Pending {
    std::string name;
    cudaEvent_t start, stop;
  };
  // The first call of each op is kept apart: it carries lazy kernel loading and cuBLAS's first-use setup
  // (milliseconds), which would swamp the mean of a short run.
  struct Total {
    long long calls = 0;  // after the first
    double ms = 0;
    double first_ms = -1;  // < 0 until the first call is in
  };
  cudaEvent_t take_event();
  std::vector<cudaEvent_t> free_;
  std::vector<Pending> pending_;
  cudaEvent_t open_ = nullptr;
  std::map<std::string, Total> totals_;
};

// RAII bracket: `OpScope scope(profiler, stream, name_fn)`; name_fn() is called only when profiling.
template <typename NameFn>
class OpScope {
 public:
  OpScope(OpProfiler* p, cudaStream_t stream, NameFn name) : p_(p), stream_(stream), name_(std::move(name)) {
    if (p_ != nullptr) p_->begin(stream_);
  }
  ~OpScope() {
    if (p_ != nullptr) p_->end(name_(), stream_);
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  OpProfiler* p_;
  cudaStream_t stream_;
  NameFn name_;
};

}  // namespace strata::cuda
