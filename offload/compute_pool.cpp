// offload/compute_pool.cpp: budget accounting of the compute pool.
#include "offload/compute_pool.h"

#include <algorithm>

#include "offload/residency.h"
#include "runtime/error.h"

namespace strata::offload {

ComputePool::ComputePool(CopyEngine& engine, int64_t budget, std::string budget_name)
    : engine_(engine), budget_(budget), budget_name_(std::move(budget_name)) {}

void ComputePool::reserve(int64_t bytes, const std::string& what) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, bytes >= 0, "negative reservation for ", what);
  STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, budget_ < 0 || used_ + bytes <= budget_, budget_name_, " ",
                    format_size(budget_), " is exhausted: ", what, " needs ", format_size(bytes), " beside the ",
                    format_size(used_), " in use; raise ", budget_name_, " or stream more layers");
  used_ += bytes;
  peak_ = std::max(peak_, used_);
}

void ComputePool::charge(int64_t bytes, const std::string& what) { reserve(bytes, what); }

void* ComputePool::allocate(int64_t bytes, const std::string& what) {
  reserve(bytes, what);
  blocks_.push_back(engine_.allocate_device(static_cast<size_t>(std::max<int64_t>(bytes, 1))));
  return blocks_.back().get();
}

}  // namespace strata::offload
