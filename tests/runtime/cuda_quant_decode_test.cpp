// tests/runtime/cuda_quant_decode_test.cpp: the CUDA backend's block decoders (runtime/cuda/quant_decode.cuh),
// compiled here as host C++, against the CPU's dequantizers (bit-identical to the gguf package): every
// 8-element group dequantizes to the same f32 bits, and every 32-element chunk's integer codes and scale terms
// give the chunk's dot product with 8-bit activations. Runs without a GPU (the GPU tests compare the kernels).
#include "runtime/cuda/quant_decode.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/formats/block_quant.h"

namespace strata {
namespace {

template <DType T>
void check_type() {
  using Q = cuda::QType<T>;
  const int64_t n = 2048;
  std::mt19937 gen(static_cast<uint32_t>(T));
  std::normal_distribution<float> normal(0.f, 0.05f);
  std::vector<float> x(n), ref(n);
  for (float& v : x) v = normal(gen);
  std::vector<uint8_t> blocks(static_cast<size_t>(dtype_bytes(T, n)));
  quantize_row(T, x.data(), blocks.data(), n);
  dequantize_row(T, blocks.data(), ref.data(), n);
  ASSERT_EQ(Q::kBytes, dtype_block_bytes(T));
  ASSERT_EQ(Q::kElems, dtype_block_elems(T));

  int64_t differ = 0;
  for (int64_t g = 0; g < n / 8; ++g) {
    float y[8];
    cuda::dequant8_any(blocks.data(), T, g, y);
    for (int i = 0; i < 8; ++i) differ += std::memcmp(&y[i], &ref[static_cast<size_t>(8 * g + i)], 4) != 0;
  }
  EXPECT_EQ(differ, 0) << dtype_name(T) << ": elements whose bits differ from the CPU's dequantization";

  std::uniform_int_distribution<int> code(-127, 127);
  double worst = 0;
  for (int64_t c = 0; c < n / 32; ++c) {
    int8_t xq[32];
    for (int8_t& v : xq) v = static_cast<int8_t>(code(gen));
    const int per_block = Q::kElems / 32;
    const cuda::Chunk ch =
        cuda::decode_chunk<T>(blocks.data() + (c / per_block) * Q::kBytes, static_cast<int>(c % per_block));
    int dot[2] = {0, 0}, sum[2] = {0, 0};
    for (int e = 0; e < 32; ++e) {
      const int w = static_cast<int8_t>(ch.q[e / 4] >> (8 * (e % 4)) & 0xff);
      dot[e / 16] += w * xq[e];
      sum[e / 16] += xq[e];
    }
    const double got = static_cast<double>(ch.a0) * dot[0] + static_cast<double>(ch.a1) * dot[1] +
                       static_cast<double>(ch.b0) * sum[0] + static_cast<double>(ch.b1) * sum[1];
    double want = 0, scale = 0;
    for (int e = 0; e < 32; ++e) {
      want += static_cast<double>(ref[static_cast<size_t>(32 * c + e)]) * xq[e];
      scale += std::fabs(static_cast<double>(ref[static_cast<size_t>(32 * c + e)]) * xq[e]);
    }
    worst = std::max(worst, std::fabs(got - want) / std::max(scale, 1e-30));
  }
  // The scale terms are products of f16 values and small integers, rounded once to f32.
  EXPECT_LT(worst, 1e-6) << dtype_name(T) << ": chunk dot products against the dequantized weights";
}

TEST(CudaQuantDecode, EveryBlockTypeMatchesTheCpu) {
  check_type<DType::kQ8_0>();
  check_type<DType::kQ4_0>();
  check_type<DType::kQ4_1>();
  check_type<DType::kQ5_0>();
  check_type<DType::kQ5_1>();
  check_type<DType::kIQ4_NL>();
  check_type<DType::kQ2_K>();
  check_type<DType::kQ3_K>();
  check_type<DType::kQ4_K>();
  check_type<DType::kQ5_K>();
  check_type<DType::kQ6_K>();
  check_type<DType::kIQ4_XS>();
  EXPECT_EQ(quantized_dtypes().size(), 12u) << "a new block type needs a decoder in quant_decode.cuh";
}

}  // namespace
}  // namespace strata
