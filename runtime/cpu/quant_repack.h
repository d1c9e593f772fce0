// runtime/cpu/quant_repack.h: q4_0, q4_1, q5_0, q5_1 and q8_0 weights (and the K-quants and iq4, whose
// layouts live in kquant_repack.h) copied at load time into groups of 8 rows whose blocks interleave 4 bytes
// at a time, so one 256-bit register holds the same 4 elements of 8 rows. A broadcast of 4 activation codes
// then multiplies 8 rows at once and the 8 row sums land in the 8 lanes of one accumulator (no horizontal
// sum per row, one vector scale step per block). Up to 4 activation rows share each unpacked weight
// register: prefill runs as a register-tiled GEMM over (8 rows x 4 tokens) tiles. The source rows (often a
// read-only memory map) are not modified.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/cpu/quant_dot.h"
#include "runtime/dtype.h"

namespace strata::cpu {

// Memory for repacked weights: 2 MiB-aligned chunks that the kernel may back with transparent huge pages
// (madvise), handed out in 64-byte-aligned pieces. Decode streams every weight once per token; with 4 KiB
// pages the hardware prefetchers stop at each page and the TLB misses add up (measured: about 18% less CPU
// time per SmolLM2 q4_0 decode run on this project's AMD EPYC VM). Small matrices share chunks, so the
// alignment wastes nothing. Pieces live until the arena does.
class RepackArena {
 public:
  uint8_t* allocate(size_t bytes);

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::mutex mutex_;
  std::vector<std::unique_ptr<uint8_t, Free>> chunks_;
  size_t used_ = 0, capacity_ = 0;  // of the last chunk
};

class RepackedWeight {
 public:
  static constexpr int64_t kGroupRows = 8;
  // The 32-element block types (q4_0, q4_1, q5_0, q5_1, q8_0), the K-quants (q2_K..q6_K) and iq4_xs / iq4_nl
  // (their layouts: kquant_repack.cpp); any k that is a multiple of block_elems and any row count (the last
  // group is zero-padded).
  static bool supports(DType dtype);
  static int64_t block_elems(DType dtype);  // 32, or the K-quants' 256
  // Copies `n` rows of `k` elements (dtype's GGUF blocks, row-major) into the interleaved layout, in memory
  // from `arena` (which must outlive this), or of its own when arena is null.
  RepackedWeight(const void* rows, DType dtype, int64_t n, int64_t k, RepackArena* arena = nullptr);

  DType dtype() const { return dtype_; }
  int64_t rows() const { return n_; }
  int64_t cols() const { return k_; }
  int64_t groups() const { return (n_ + kGroupRows - 1) / kGroupRows; }
  // The interleaved bytes (at least rows x the row's block bytes): an address unique to this copy.
  const uint8_t* data() const { return data_; }
  // Whether multiply of m activation rows is faster with activations from quantize_activations_256 than
  // quantize_activations (both give correct results; kquant_repack.h says which types and m: prefill only,
  // so decode's activations keep their scale per 32).
  bool wants_activations_256(int64_t m) const;

  // out[i * ldo + r] = x_i . w_r + bias[r] (bias may be null) for the m activation rows x_i (k / 32
  // blocks each, consecutive) and the rows r of groups [g_begin, g_end).
  void multiply(const ActBlock* x, int64_t m, int64_t g_begin, int64_t g_end, const float* bias, float* out,
                int64_t ldo) const;

 private:
  DType dtype_;
  int64_t n_, k_;
  bool kquant_ = false;   // the K-quant / iq4 layouts (kquant_repack.h)
  int64_t group_bytes_;  // one group of 8 rows
  std::unique_ptr<uint8_t[]> storage_;  // without an arena
  uint8_t* data_;                       // 64-byte aligned
};

}  // namespace strata::cpu
