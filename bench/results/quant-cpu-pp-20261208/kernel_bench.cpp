// kernel_bench.cpp: time of RepackedWeight::multiply (activation quantization included) for one weight type,
// n x k random weights and m tokens, best of `reps` calls; prints ns per (8 rows x 32 elements x token).
// Activations as the CPU backend quantizes them for that weight (wants_activations_256; a build without it
// takes quantize_activations: build with -DPER32 for main's tree).
// Build against a CPU build's runtime library, from the repository root:
//   g++ -O3 -march=x86-64-v3 -std=c++20 -I. bench/results/quant-cpu-pp-20261208/kernel_bench.cpp \
//       build/libstrata_runtime.a -fopenmp -o /tmp/kernel_bench
// Usage: kernel_bench TYPE N K M [REPS]   (TYPE: q2_k q3_k q4_k q5_k q6_k iq4_xs iq4_nl)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/cpu/quant_dot.h"
#include "runtime/cpu/quant_repack.h"
#include "runtime/dtype.h"
#include "runtime/formats/block_quant.h"

using namespace strata;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s TYPE N K M [REPS]\n", argv[0]);
    return 2;
  }
  const std::string ty = argv[1];
  const int64_t n = std::atoll(argv[2]), k = std::atoll(argv[3]), m = std::atoll(argv[4]);
  const int reps = argc > 5 ? std::atoi(argv[5]) : 20;
  const DType dt = ty == "q2_k"     ? DType::kQ2_K
                   : ty == "q3_k"   ? DType::kQ3_K
                   : ty == "q4_k"   ? DType::kQ4_K
                   : ty == "q5_k"   ? DType::kQ5_K
                   : ty == "q6_k"   ? DType::kQ6_K
                   : ty == "iq4_xs" ? DType::kIQ4_XS
                                    : DType::kIQ4_NL;
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.f, 0.05f);
  std::vector<float> wf(static_cast<size_t>(n * k)), xf(static_cast<size_t>(m * k));
  for (float& v : wf) v = normal(gen);
  for (float& v : xf) v = 20 * normal(gen);
  std::vector<uint8_t> w(static_cast<size_t>(n * k / dtype_block_elems(dt) * dtype_block_bytes(dt)));
  quantize_row(dt, wf.data(), w.data(), n * k);
  const cpu::RepackedWeight packed(w.data(), dt, n, k);
#ifdef PER32
  const auto quantize = cpu::quantize_activations;
#else
  const auto quantize = packed.wants_activations_256(m) ? cpu::quantize_activations_256 : cpu::quantize_activations;
#endif
  std::vector<cpu::ActBlock> acts(static_cast<size_t>(m * k / 32));
  std::vector<float> out(static_cast<size_t>(m * n));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < m; ++i) quantize(xf.data() + i * k, k, acts.data() + i * (k / 32));
    packed.multiply(acts.data(), m, 0, packed.groups(), nullptr, out.data(), n);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  double check = 0;
  for (float v : out) check += v;
  std::printf("%s n=%lld k=%lld m=%lld: %.3f ms, %.3f ns per 8 rows x 32 x token (checksum %.3f)\n", ty.c_str(),
              static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m), best * 1e3,
              best * 1e9 / (static_cast<double>(n) / 8 * static_cast<double>(k) / 32 * static_cast<double>(m)), check);
}
