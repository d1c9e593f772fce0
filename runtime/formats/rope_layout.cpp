// runtime/formats/rope_layout.cpp: q/k row permutations (derivation in the header).
#include "runtime/formats/rope_layout.h"

#include <cstring>

#include "runtime/error.h"

namespace strata {

int64_t half_row_for_adjacent_row(int64_t row, int64_t d) {
  const int64_t h = row / d, r = row % d;
  return h * d + (r % 2) * (d / 2) + r / 2;
}

int64_t adjacent_row_for_half_row(int64_t row, int64_t d) {
  const int64_t h = row / d, r = row % d;
  return h * d + 2 * (r % (d / 2)) + r / (d / 2);
}

namespace {
Tensor permute_rows(const Tensor& w, int64_t n_heads, bool to_adjacent) {
  STRATA_CHECK(w.device() == Device::kCpu && w.rank() >= 1 && n_heads > 0 && w.dim(0) % n_heads == 0 &&
                   (w.dim(0) / n_heads) % 2 == 0,
               "cannot permute q/k rows of shape ", shape_str(w.shape()), " over ", n_heads, " heads");
  const int64_t rows = w.dim(0), d = rows / n_heads;
  const int64_t row_bytes = w.nbytes() / rows;
  Tensor out = Tensor::empty(w.shape(), w.dtype());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = to_adjacent ? half_row_for_adjacent_row(r, d) : adjacent_row_for_half_row(r, d);
    std::memcpy(out.data<uint8_t>() + r * row_bytes, w.data<uint8_t>() + src * row_bytes, row_bytes);
  }
  return out;
}
}  // namespace

Tensor permute_half_to_adjacent(const Tensor& w, int64_t n_heads) { return permute_rows(w, n_heads, true); }
Tensor permute_adjacent_to_half(const Tensor& w, int64_t n_heads) { return permute_rows(w, n_heads, false); }

}  // namespace strata
