// runtime/collective.cpp: the single-rank collective.
#include "runtime/collective.h"

#include <cstring>

#include "runtime/error.h"

namespace strata {
namespace {
class DoneCollectiveWork final : public CollectiveWork {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<CollectiveWork> Collective::all_reduce_sum_async(Tensor& t) {
  all_reduce_sum(t);
  return std::make_unique<DoneCollectiveWork>();
}

void LocalCollective::all_gather(const Tensor& in, Tensor& out) {
  STRATA_CHECK(in.nbytes() == out.nbytes(), "all_gather of one rank needs equal sizes");
  std::memcpy(out.raw(), in.raw(), static_cast<size_t>(in.nbytes()));
}

}  // namespace strata
