// tests/gpu/attention_splits.cu: the decode attention kernels (shared-memory tiles, and per-warp where it
// applies) at one token per sequence, timed per split count of the context (flash-decoding) in CUDA graphs
// of 32 launches (one KV cache per layer, as in a decode step), each output checked against a
// double-precision host reference. Prints us per launch and which split count attention_decode_splits()
// picks, to tune that rule and compare the kernels. Built with the CUDA build (target attention_splits);
// run: build-gpu/tests/attention_splits [--grain 16|32|64|128] [--max-keys N] (the split step, as
// decode_split_grain; the most keys a split, as decode_split_max_keys) [--min-context N] (skip shorter cases)
// [--splits N] (only that split count: one launch per form, for a profiler).
// GB/s is the K and V bytes a launch reads over its time. "ring" rows are the per-warp split blocks with K and V
// through the cp.async ring (decode_kv_ring).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "tests/gpu/bench_util.cuh"

namespace {

using strata::DType;
namespace cu = strata::cuda;

uint16_t to_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t{h} << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

struct Case {
  int64_t heads, kv_heads, context;
};

}  // namespace

int main(int argc, char** argv) {
  constexpr int kLayers = 32, kBlock = 16;
  constexpr int64_t kHd = 128;
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int sm = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sm, cudaDevAttrMultiProcessorCount, 0));
  const cu::Launch on(s, /*pdl_on=*/true, cu::GemvRolling::kByGrid);
  // --grain N as the backend's decode_split_grain kernel option: the keys a split's length is a multiple of.
  int grain_keys = cu::AttentionArgs{}.split_grain, max_keys = cu::AttentionArgs{}.split_max_keys;
  int64_t min_context = 0, only_splits = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--grain") == 0) grain_keys = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--max-keys") == 0) max_keys = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--min-context") == 0) min_context = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--splits") == 0) only_splits = std::atoll(argv[i + 1]);
  }
  std::printf("split grain %d keys, at most %d keys a split (0: no bound)\n", grain_keys, max_keys);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::printf("%-34s %6s %-12s %10s %8s %9s\n", "case (1 token)", "splits", "kernel", "us/launch", "KV GB/s",
              "rel err");
  // Contexts as a decode step records them: the split plan sees max_position = the padded table width.
  // 7b-shape (MHA), Llama-3-8B (4 query heads per KV head), 70b-shape (8), and one rank's heads of 13b-shape
  // at TP8 (5 heads) and of 70b-shape at TP8 (8 query heads on 1 KV head); Llama-3-8B at 8k and 32k keys.
  for (const Case c : {Case{32, 32, 80}, Case{32, 32, 500}, Case{32, 32, 4000}, Case{32, 8, 4000}, Case{32, 8, 80},
                       Case{64, 8, 80}, Case{64, 8, 500}, Case{5, 5, 80}, Case{8, 1, 80}, Case{8, 1, 500},
                       Case{32, 8, 8192}, Case{32, 8, 32768}}) {
    if (c.context < min_context) continue;
    int64_t width = 4;
    while (width * kBlock < c.context) width *= 2;
    const int64_t blocks = width, row = c.kv_heads * kHd, cache_elems = blocks * kBlock * row;
    std::vector<uint16_t> q(static_cast<size_t>(c.heads * kHd)), k(static_cast<size_t>(cache_elems)),
        v(static_cast<size_t>(cache_elems));
    for (auto& x : q) x = to_bf16(normal(rng));
    for (auto& x : k) x = to_bf16(normal(rng));
    for (auto& x : v) x = to_bf16(normal(rng));
    // Host reference, double precision, from the bf16 values. The table maps block i to block i.
    const float scale = 1.f / std::sqrt(static_cast<float>(kHd));
    std::vector<double> want(static_cast<size_t>(c.heads * kHd));
    const int64_t G = c.heads / c.kv_heads;
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t kvh = h / G;
      std::vector<double> p(static_cast<size_t>(c.context));
      double mx = -1e300;
      for (int64_t j = 0; j < c.context; ++j) {
        double d = 0;
        for (int64_t i = 0; i < kHd; ++i)
          d += static_cast<double>(from_bf16(q[static_cast<size_t>(h * kHd + i)])) * scale *
               from_bf16(k[static_cast<size_t>(j * row + kvh * kHd + i)]);
        p[static_cast<size_t>(j)] = d;
        mx = std::max(mx, d);
      }
      double den = 0;
      for (double& x : p) den += (x = std::exp(x - mx));
      for (int64_t i = 0; i < kHd; ++i) {
        double o = 0;
        for (int64_t j = 0; j < c.context; ++j)
          o += p[static_cast<size_t>(j)] * from_bf16(v[static_cast<size_t>(j * row + kvh * kHd + i)]);
        want[static_cast<size_t>(h * kHd + i)] = o / den;
      }
    }
    // One cache per layer, all holding the same values (only the bytes' placement matters for timing).
    std::vector<void*> kc(kLayers), vc(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      CHECK_CUDA(cudaMalloc(&kc[l], k.size() * 2));
      CHECK_CUDA(cudaMalloc(&vc[l], v.size() * 2));
      CHECK_CUDA(cudaMemcpy(kc[l], k.data(), k.size() * 2, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(vc[l], v.data(), v.size() * 2, cudaMemcpyHostToDevice));
    }
    std::vector<int32_t> meta = {static_cast<int32_t>(c.context - 1), 0};  // position, token_seq
    for (int64_t b = 0; b < blocks; ++b) meta.push_back(static_cast<int32_t>(b));
    void *qd, *out, *metad, *scratch;
    CHECK_CUDA(cudaMalloc(&qd, q.size() * 2));
    CHECK_CUDA(cudaMalloc(&out, q.size() * 2));
    CHECK_CUDA(cudaMalloc(&metad, meta.size() * 4));
    CHECK_CUDA(cudaMemcpy(qd, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(metad, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
    cu::AttentionArgs a;
    a.q = qd;
    a.out = out;
    a.positions = static_cast<const int32_t*>(metad);
    a.token_seq = a.positions + 1;
    a.block_tables = a.positions + 2;
    a.n_tokens = 1, a.n_seqs = 1, a.max_blocks = blocks, a.block_size = kBlock, a.max_position = blocks * kBlock;
    a.n_heads = c.heads, a.n_kv_heads = c.kv_heads, a.head_dim = kHd, a.n_cache_blocks = blocks;
    a.scale = scale;
    a.sm_count = sm;
    a.split_grain = grain_keys;
    a.split_max_keys = max_keys;
    const int64_t rule = cu::attention_decode_splits(a, sm);
    CHECK_CUDA(cudaMalloc(&scratch, std::max<int64_t>(cu::attention_decode_scratch_bytes(a, 512), 16)));
    const int64_t grain = a.split_grain;
    const double kv_bytes = static_cast<double>(c.context) * c.kv_heads * kHd * 2 * 2;
    for (int64_t splits : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}, int64_t{16}, int64_t{32}, int64_t{64},
                           int64_t{128}, int64_t{256}, int64_t{512}}) {
      if (splits > 64 && c.context < 8192) break;  // short contexts: past 64 splits only the merge grows
      if ((splits - 1) * grain >= a.max_position) break;  // the plan cannot make more splits than grain-key pieces
      if (cu::attention_decode_splits_made(a, splits) != splits) continue;  // the same launch as a smaller count
      if (only_splits > 0 && splits != only_splits) continue;
      // tiles; per warp in split blocks, then whole where the plan allows, each with the rule's blocks per KV
      // head, then each head split forced; forms that make the same launch as one before are skipped.
      struct Kernel {
        const char* name;
        bool warps, whole;
        int head_split;
        bool ring = false;
      };
      constexpr Kernel kKernels[] = {{"tiles", false, false, 0},      {"warps", true, false, 0},
                                     {"warps", true, false, 2},       {"warps", true, false, 4},
                                     {"warps", true, false, 8},       {"whole", true, true, 0},
                                     {"whole", true, true, 1},        {"whole", true, true, 2},
                                     {"whole", true, true, 4},        {"whole", true, true, 8},
                                     {"ring", true, false, 0, true},  {"ring", true, false, 2, true},
                                     {"ring", true, false, 4, true}};
      std::vector<cu::DecodeWarpsForm> seen, seen_ring;
      for (const Kernel& kernel : kKernels) {
        a.decode_warps = kernel.warps;
        a.whole_blocks = kernel.whole;
        a.head_split = kernel.head_split;
        a.kv_ring = kernel.ring;
        const cu::DecodeWarpsForm form = cu::attention_decode_form(a, splits);
        if (kernel.warps) {
          auto& forms = kernel.ring ? seen_ring : seen;
          if (std::find(forms.begin(), forms.end(), form) != forms.end()) continue;
          if (kernel.ring && form.warps != 4) continue;  // the ring applies to split blocks of 4 warps only
          forms.push_back(form);
        }
        std::vector<uint16_t> got(q.size(), 0xffff);
        CHECK_CUDA(cudaMemcpy(out, got.data(), got.size() * 2, cudaMemcpyHostToDevice));
        a.k_cache = kc[0], a.v_cache = vc[0];
        cu::launch_attention_decode(a, splits, scratch, on);
        CHECK_CUDA(cudaStreamSynchronize(s));
        CHECK_CUDA(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));
        double num = 0, den = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const double d = from_bf16(got[i]) - want[i];
          num += d * d;
          den += want[i] * want[i];
        }
        const double us = strata::gpu_bench::graph_replay_us(s, [&] {
          for (int l = 0; l < kLayers; ++l) {
            a.k_cache = kc[l], a.v_cache = vc[l];
            cu::launch_attention_decode(a, splits, scratch, on);
          }
        }) / kLayers;
        char name[96];
        std::snprintf(name, sizeof name, "H %lld Hkv %lld ctx %lld (max %lld)%s", static_cast<long long>(c.heads),
                      static_cast<long long>(c.kv_heads), static_cast<long long>(c.context),
                      static_cast<long long>(a.max_position), splits == rule ? " *rule" : "");
        // "<warps>w/<blocks per KV head>", * where the rule chose it, " s<n>" where it made n splits of the plan's
        char form_name[48];
        std::snprintf(form_name, sizeof form_name, "%s", kernel.name);
        if (kernel.warps) {
          const bool whole = form.splits == 1 && splits > 1;
          char merged[16] = "";
          if (form.splits > 1 && form.splits != splits) std::snprintf(merged, sizeof merged, " s%d", form.splits);
          std::snprintf(form_name, sizeof form_name, "%s %dw/%d%s%s", whole ? "whole" : kernel.name, form.warps,
                        form.head_split, kernel.head_split == 0 ? "*" : "", merged);
        }
        std::printf("%-34s %6lld %-12s %10.2f %8.0f %9.1e\n", name, static_cast<long long>(splits), form_name, us,
                    kv_bytes / (us * 1e-6) / 1e9, std::sqrt(num / den));
      }
    }
    for (int l = 0; l < kLayers; ++l) {
      CHECK_CUDA(cudaFree(kc[l]));
      CHECK_CUDA(cudaFree(vc[l]));
    }
    for (void* p : {qd, out, metad, scratch}) CHECK_CUDA(cudaFree(p));
  }
  return 0;
}
