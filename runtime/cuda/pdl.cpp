// runtime/cuda/pdl.cpp: the process-wide switch of programmatic dependent launch (see pdl.cuh).
#include <atomic>

#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {
std::atomic<bool> g_pdl{false};
}  // namespace

bool pdl_enabled() { return g_pdl.load(std::memory_order_relaxed); }
void set_pdl_enabled(bool on) { g_pdl.store(on, std::memory_order_relaxed); }

}  // namespace strata::cuda
