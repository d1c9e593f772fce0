// runtime/cpu/kquant_repack.h: the K-quants (q2_K, q3_K, q4_K, q5_K, q6_K) and iq4_xs / iq4_nl in
// RepackedWeight's 8-row groups (quant_repack.h): one 256-bit register holds the same 4 elements of 8 rows,
// so a block of 32 elements ends in one int32 per row in the lanes of one vector, and the per-row scales
// step as vectors too. RepackedWeight owns the memory and the row/group bookkeeping; this file knows the
// layouts and the (8 rows x 1..4 tokens) tiles; prefill calls of 8+ tokens unpack each 256-element chunk of
// the group once for all of them. Not a public interface: include quant_repack.h.
#pragma once
#include <cstdint>

#include "runtime/cpu/quant_dot.h"
#include "runtime/dtype.h"

namespace strata::cpu::kquant {

// q2_K, q3_K, q4_K, q5_K, q6_K, iq4_xs (256-element super-blocks) and iq4_nl (32-element blocks).
bool supports(DType dtype);
// q3_K, q5_K, q6_K and iq4_xs (not q2_K, q4_K: kquant_repack.cpp says why) from 8 tokens a call on: the
// chunked prefill path is faster with activations from quantize_activations_256 (one float step per 256
// elements instead of 8). Every path gives correct results with either kind of activations.
bool wants_activations_256(DType dtype, int64_t tokens);
// The elements of the type's (super-)block: rows must hold a whole number of them.
int64_t block_elems(DType dtype);
// Bytes of one group of 8 rows of k elements.
int64_t group_bytes(DType dtype, int64_t k);
// Copies `rows` (1..8) rows of k elements (GGUF blocks, row-major, consecutive at src) into one group at
// out (group_bytes long, zeroed by the caller: the missing rows keep zero scales and contribute nothing).
void pack_group(DType dtype, const uint8_t* src, int64_t rows, int64_t k, uint8_t* out);
// Activation rows one multiply_group call takes: prefill unpacks each chunk of the group once per call.
constexpr int kMaxTokens = 32;
// out[t][r] = x[t] . w_r for the group's 8 rows and `count` (1..kMaxTokens) activation rows of k / 32 blocks
// each.
void multiply_group(DType dtype, const uint8_t* group, int64_t k, const ActBlock* const* x, int count,
                    float (*out)[8]);

}  // namespace strata::cpu::kquant
