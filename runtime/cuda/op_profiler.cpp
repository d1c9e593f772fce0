// runtime/cuda/op_profiler.cpp: see op_profiler.h.
#include "runtime/cuda/op_profiler.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "runtime/cuda/check_cuda.h"
#include "runtime/log.h"

namespace strata::cuda {

OpProfiler::~OpProfiler() {
  collect();
  for (cudaEvent_t e : free_) (void)cudaEventDestroy(e);
  if (open_ != nullptr) (void)cudaEventDestroy(open_);
}

cudaEvent_t OpProfiler::take_event() {
  if (free_.empty()) {
    cudaEvent_t e = nullptr;
    CHECK_CUDA(cudaEventCreate(&e));
    return e;
  }
  cudaEvent_t e = free_.back();
  free_.pop_back();
  return e;
}

void OpProfiler::begin(cudaStream_t stream) {
  if (open_ == nullptr) open_ = take_event();
  CHECK_CUDA(cudaEventRecord(open_, stream));
}

void OpProfiler::end(const std::string& name, cudaStream_t stream) {
  if (open_ == nullptr) return;
  cudaEvent_t stop = take_event();
  CHECK_CUDA(cudaEventRecord(stop, stream));
  pending_.push_back({name, open_, stop});
  open_ = nullptr;
  if (pending_.size() >= 8192) collect();  // bounds the events held
}

void OpProfiler::collect() {
  if (pending_.empty()) return;
  CHECK_CUDA(cudaEventSynchronize(pending_.back().stop));
  for (Pending& p : pending_) {
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, p.start, p.stop));
    Total& t = totals_[p.name];
    if (t.first_ms < 0) {
      t.first_ms = ms;
    } else {
      ++t.calls;
      t.ms += ms;
    }
    free_.push_back(p.start);
    free_.push_back(p.stop);
  }
  pending_.clear();
}

std::string OpProfiler::report() {
  collect();
  std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double all = 0;
  for (const auto& r : rows) all += r.second.ms;
  std::string out =
      "CUDA op profile: GPU time per backend op (events on the compute stream; calls after each op's first,\n"
      "whose time, with lazy loading in it, is shown apart)\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-44s %8s %11s %10s %6s %10s\n", "op", "calls", "total ms", "mean us", "share",
                "first us");
  out += line;
  for (const auto& [name, t] : rows) {
    std::snprintf(line, sizeof line, "  %-44s %8lld %11.3f %10.2f %5.1f%% %10.1f\n", name.c_str(), t.calls, t.ms,
                  t.calls > 0 ? 1e3 * t.ms / static_cast<double>(t.calls) : 0.0, all > 0 ? 100 * t.ms / all : 0.0,
                  1e3 * t.first_ms);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-44s %8s %11.3f\n", "all ops", "", all);
  out += line;
  return out;
}

}  // namespace strata::cuda
