// runtime/collective.cpp: the single-rank collective.
#include "runtime/collective.h"

#include <cstring>

#include "runtime/error.h"

namespace strata {

void LocalCollective::all_gather(const Tensor& in, Tensor& out) {
  STRATA_CHECK(in.nbytes() == out.nbytes(), "all_gather of one rank needs equal sizes");
  std::memcpy(out.raw(), in.raw(), static_cast<size_t>(in.nbytes()));
}

}  // namespace strata
