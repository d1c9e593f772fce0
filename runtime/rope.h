// runtime/rope.h: RoPE inverse frequencies (with Llama-3 scaling), computed the way Hugging Face
// does in f32 so logits match the reference; shared by every backend.
#pragma once
#include <vector>

#include "runtime/backend.h"

namespace strata {

// rot_dim / 2 inverse frequencies theta^(-2i/rot_dim), scaled per params.scaling.
std::vector<float> rope_inv_freq(const RopeParams& params, int64_t rot_dim);

}  // namespace strata
