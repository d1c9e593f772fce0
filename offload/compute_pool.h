// offload/compute_pool.h: the rank's device memory for weights under a hard byte budget: resident
// weights and the KV reserve are charged to it, the staging ring is allocated from it. On the CPU
// backend it stands in for device memory so tests can assert the peak never passes the budget.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "offload/copy_engine.h"

namespace strata::offload {

class ComputePool {
 public:
  // `budget` < 0: no limit. `budget_name` says where the budget came from, for messages.
  ComputePool(CopyEngine& engine, int64_t budget, std::string budget_name = "device_budget");
  ComputePool(const ComputePool&) = delete;
  ComputePool& operator=(const ComputePool&) = delete;

  // Counts memory allocated elsewhere (backend uploads, the KV cache) against the budget.
  void charge(int64_t bytes, const std::string& what);
  // Device memory from the engine, held until the pool goes; counted against the budget.
  void* allocate(int64_t bytes, const std::string& what);

  int64_t used() const { return used_; }
  int64_t peak() const { return peak_; }
  int64_t budget() const { return budget_; }

 private:
  void reserve(int64_t bytes, const std::string& what);
  CopyEngine& engine_;
  int64_t budget_;
  std::string budget_name_;
  int64_t used_ = 0, peak_ = 0;
  std::vector<std::shared_ptr<void>> blocks_;
};

}  // namespace strata::offload
