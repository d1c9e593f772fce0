// runtime/formats/rope_layout.h: the q/k row permutation between Hugging Face's rotate-half RoPE
// layout and the adjacent-pair layout of llama2.c and GGUF (llama.cpp's converter applies it).
//
// Derivation. Within one head of size d, rotate-half rotates the pair (i, i + d/2) by frequency i;
// adjacent-pair rotates (2i, 2i + 1) by frequency i (i < d/2). Both layouts compute the same
// attention when q and k are stored so that adjacent row 2i + j holds half row i + j*d/2, j in
// {0, 1}: the same rotation then acts on the same numbers, and q.k is a sum over a head's rows in
// any order. So, for each head h:   adjacent[h*d + 2i + j] = half[h*d + j*d/2 + i].
// (llama.cpp: w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2); HF export: the inverse.)
#pragma once
#include <cstdint>

#include "runtime/tensor.h"

namespace strata {

// Row of the rotate-half tensor that lands at `adjacent_row` (rows = n_heads * head_dim).
int64_t half_row_for_adjacent_row(int64_t adjacent_row, int64_t head_dim);
// Row of the adjacent-pair tensor that lands at `half_row`.
int64_t adjacent_row_for_half_row(int64_t half_row, int64_t head_dim);

// New owning tensors with rows permuted (any dtype: whole rows move). `w` is [n_heads * head_dim, ...]
// (a weight) or [n_heads * head_dim] (a bias).
Tensor permute_half_to_adjacent(const Tensor& w, int64_t n_heads);
Tensor permute_adjacent_to_half(const Tensor& w, int64_t n_heads);

}  // namespace strata
