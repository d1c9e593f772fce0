// tests/gpu/kv_fp8_gpu_test.cpp: the CUDA backend's fp8 (e4m3) KV cache against the CPU backend's: the
// cache write (kv_write, rope_kv_write) byte for byte, and paged attention over the same fp8 caches (decode,
// decode with split contexts, prefill and chunked prefill over cached blocks; GQA 1 to 8, head_dim 8 to 256)
// on every attention path the backend offers (the tiled decode kernel; for prefill the SIMT kernel and, with
// prefill_mma_fp8_kv, the tensor-core kernel at head_dim 64 and 128, which rounds the dequantized K/V rows to
// bf16 on load; the per-warp decode kernel declines fp8). Inputs are bf16 values on both sides, so the codes and scales agree exactly and
// the outputs differ by the kernels' summation order and bf16 roundings only. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/fp8_kv.h"
#include "runtime/kv_cache.h"

namespace strata {
namespace {

constexpr double kBf16Out = 1e-2;  // ||gpu - cpu|| / ||cpu||: the bf16 output rounding and summation order

std::mt19937& rng() {
  static std::mt19937 g(1207);
  return g;
}

// Random values rounded to bf16 (what the GPU's activations can hold).
Tensor random_bf16_values(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::normal_distribution<float> n(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = bf16_to_f32(f32_to_bf16(n(rng())));
  return t;
}

Tensor host_i32(const std::vector<int32_t>& v, Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(v.size())};
  Tensor t = Tensor::empty(shape, DType::kI32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

double rel_error(const Tensor& got, const Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = static_cast<double>(got.data<float>()[i]) - want.data<float>()[i];
    num += d * d;
    den += static_cast<double>(want.data<float>()[i]) * want.data<float>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

Tensor clone(const Tensor& t) {  // Tensor copies share storage; the caches below must not
  Tensor o = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(o.raw(), t.raw(), static_cast<size_t>(t.nbytes()));
  return o;
}

// An fp8 host cache [blocks, bs, hkv, hd + 4] holding the rows of an f32 one.
Tensor fp8_cache_of(const Tensor& f32) {
  const int64_t hd = f32.dim(3), rows = f32.numel() / hd;
  Tensor c = Tensor::empty({f32.dim(0), f32.dim(1), f32.dim(2), fp8_kv_row_bytes(hd)}, DType::kF8_E4M3);
  for (int64_t r = 0; r < rows; ++r)
    fp8_kv_encode_row(f32.data<float>() + r * hd, hd, c.data<uint8_t>() + r * fp8_kv_row_bytes(hd));
  return c;
}

class CudaFp8Kv : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible";
    cpu_ = make_cpu_backend();
  }
  static Tensor dev(Backend& g, const Tensor& h, DType dt) {
    Tensor d = g.alloc(h.shape(), dt);
    g.copy(h, d);
    return d;
  }
  static Tensor host_bytes(Backend& g, const Tensor& d) {
    Tensor h = Tensor::empty(d.shape(), d.dtype());
    g.copy(d, h);
    return h;
  }
  std::unique_ptr<Backend> cpu_;
};

TEST_F(CudaFp8Kv, KvWriteAndRopeKvWriteWriteTheCpuBytes) {
  auto g = make_cuda_backend(0);
  for (int64_t hd : {8, 64, 128}) {
    const int64_t blocks = 6, bs = 16, hkv = 2, H = 8, T = 10;
    const std::vector<int32_t> slots = {0, 5, 17, 18, 40, -1, 42, 95, 64, 3}, pos = {0, 1, 2, 3, 9, 5, 60, 7, 800, 9};
    const Tensor init = fp8_cache_of(random_bf16_values({blocks, bs, hkv, hd}));
    const Tensor k = random_bf16_values({T, hkv, hd}), v = random_bf16_values({T, hkv, hd});
    Tensor kc = fp8_cache_of(random_bf16_values({blocks, bs, hkv, hd})), vc = clone(init);
    Tensor kcd = dev(*g, kc, DType::kF8_E4M3), vcd = dev(*g, vc, DType::kF8_E4M3);
    g->kv_write(dev(*g, k, DType::kBF16), dev(*g, v, DType::kBF16), dev(*g, host_i32(slots), DType::kI32), kcd, vcd);
    cpu_->kv_write(k, v, host_i32(slots), kc, vc);
    EXPECT_EQ(std::memcmp(host_bytes(*g, kcd).raw(), kc.raw(), static_cast<size_t>(kc.nbytes())), 0) << "hd " << hd;
    EXPECT_EQ(std::memcmp(host_bytes(*g, vcd).raw(), vc.raw(), static_cast<size_t>(vc.nbytes())), 0) << "hd " << hd;

    // rope_kv_write into fp8 caches: the rotated keys' rows as the CPU writes them (rope in f32 on both
    // sides, then the GPU's bf16 k; so compared dequantized, within a code step of bf16's rounding).
    Tensor q = random_bf16_values({T, H, hd}), kr = clone(k);
    Tensor qd = dev(*g, q, DType::kBF16), krd = dev(*g, k, DType::kBF16);
    Tensor kc2 = clone(init), vc2 = clone(init), kc2d = dev(*g, init, DType::kF8_E4M3), vc2d = dev(*g, init, DType::kF8_E4M3);
    RopeParams rope;
    g->rope_kv_write(qd, krd, dev(*g, v, DType::kBF16), dev(*g, host_i32(pos), DType::kI32), rope,
                     dev(*g, host_i32(slots), DType::kI32), kc2d, vc2d);
    cpu_->rope_kv_write(q, kr, v, host_i32(pos), rope, host_i32(slots), kc2, vc2);
    const Tensor got = host_bytes(*g, kc2d);
    const int64_t rows = kc2.numel() / fp8_kv_row_bytes(hd);
    std::vector<float> a(static_cast<size_t>(hd)), b(static_cast<size_t>(hd));
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; ++r) {
      fp8_kv_decode_row(got.data<uint8_t>() + r * fp8_kv_row_bytes(hd), hd, a.data());
      fp8_kv_decode_row(kc2.data<uint8_t>() + r * fp8_kv_row_bytes(hd), hd, b.data());
      for (int64_t i = 0; i < hd; ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    }
    EXPECT_LT(std::sqrt(num / den), 0.05) << "rope into fp8, hd " << hd;  // e4m3's half step is 6%
    EXPECT_EQ(std::memcmp(host_bytes(*g, vc2d).raw(), vc2.raw(), static_cast<size_t>(vc2.nbytes())), 0);
  }
}

struct Fp8Case {
  int64_t group, head_dim;
};

class CudaFp8Attention : public CudaFp8Kv, public ::testing::WithParamInterface<Fp8Case> {
 protected:
  // Sequences of the given lengths over shuffled blocks; the batch holds the last new_tokens[s] positions of
  // each (1: decode; fewer than the length: a prefill chunk over cached blocks).
  void run(const std::vector<int32_t>& lens, const std::vector<int32_t>& new_tokens, const char* what) {
    const Fp8Case c = GetParam();
    const int64_t bs = 16, hkv = 2, H = hkv * c.group, hd = c.head_dim;
    int64_t max_blocks = 0, total = 3;
    for (int32_t len : lens) max_blocks = std::max<int64_t>(max_blocks, (len + bs - 1) / bs), total += (len + bs - 1) / bs;
    std::vector<int32_t> perm(static_cast<size_t>(total));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    std::vector<int32_t> tables(lens.size() * static_cast<size_t>(max_blocks), -1), positions, token_seq, slots;
    size_t next = 0;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int64_t b = 0; b < (lens[s] + bs - 1) / bs; ++b) tables[s * max_blocks + b] = perm[next++];
    int32_t max_pos = 0;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int32_t p = lens[s] - new_tokens[s]; p < lens[s]; ++p) {
        positions.push_back(p), token_seq.push_back(static_cast<int32_t>(s));
        slots.push_back(tables[s * max_blocks + p / bs] * bs + p % bs);
        max_pos = std::max(max_pos, p + 1);
      }
    const auto T = static_cast<int64_t>(positions.size());
    const Tensor kc = fp8_cache_of(random_bf16_values({total, bs, hkv, hd}));
    const Tensor vc = fp8_cache_of(random_bf16_values({total, bs, hkv, hd}));
    const Tensor q = random_bf16_values({T, H, hd});
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    AttentionBatch hb;
    hb.positions = host_i32(positions), hb.slots = host_i32(slots), hb.token_seq = host_i32(token_seq);
    hb.block_tables = host_i32(tables, {static_cast<int64_t>(lens.size()), max_blocks});
    hb.n_tokens = T, hb.n_seqs = static_cast<int64_t>(lens.size()), hb.max_blocks = max_blocks, hb.block_size = bs;
    hb.max_position = max_pos;
    Tensor want = Tensor::empty(q.shape(), DType::kF32);
    cpu_->attention(q, kc, vc, hb, scale, want);

    using Path = CudaBackendOptions::AttentionPath;
    struct Form {
      Path path;
      bool warps, mma_fp8;
    };
    for (const Form f : {Form{Path::kAuto, false, false}, Form{Path::kDecode, true, false},
                         Form{Path::kPrefill, false, false}, Form{Path::kPrefill, false, true},
                         Form{Path::kPrefillSimt, false, false}}) {
      const Path path = f.path;
      CudaBackendOptions opt;
      opt.attention_path = path;
      opt.decode_attention_warps = f.warps;
      opt.prefill_mma_fp8_kv = f.mma_fp8;
      auto g = make_cuda_backend(0, opt);
      AttentionBatch db = hb;
      for (Tensor* t : {&db.positions, &db.slots, &db.token_seq, &db.block_tables}) *t = dev(*g, *t, DType::kI32);
      Tensor nan = Tensor::empty(q.shape(), DType::kF32);
      std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::nanf(""));
      Tensor out = dev(*g, nan, DType::kBF16);
      g->attention(dev(*g, q, DType::kBF16), dev(*g, kc, DType::kF8_E4M3), dev(*g, vc, DType::kF8_E4M3), db, scale, out);
      Tensor got = Tensor::empty(q.shape(), DType::kF32);
      g->copy(out, got);
      EXPECT_LT(rel_error(got, want), kBf16Out) << what << ": group " << c.group << " head_dim " << hd << " path "
                                                << static_cast<int>(path) << " tensor-core fp8 " << f.mma_fp8;
    }
    // One token per sequence: the fused rope + write + attention declines fp8 caches (the caller then makes
    // the unfused calls, checked above).
    if (std::all_of(new_tokens.begin(), new_tokens.end(), [](int32_t n) { return n == 1; })) {
      auto g = make_cuda_backend(0);
      AttentionBatch db = hb;
      for (Tensor* t : {&db.positions, &db.slots, &db.token_seq, &db.block_tables}) *t = dev(*g, *t, DType::kI32);
      db.one_token_per_seq = true;
      Tensor qd = dev(*g, q, DType::kBF16), kd = dev(*g, random_bf16_values({T, hkv, hd}), DType::kBF16);
      Tensor kcd = dev(*g, kc, DType::kF8_E4M3), vcd = dev(*g, vc, DType::kF8_E4M3), out = dev(*g, want, DType::kBF16);
      EXPECT_FALSE(g->rope_kv_attention(qd, kd, kd, db, RopeParams{}, kcd, vcd, scale, out));
    }
  }
};

TEST_P(CudaFp8Attention, Decode) { run({1, 17, 100, 300, 1000}, {1, 1, 1, 1, 1}, "decode"); }
TEST_P(CudaFp8Attention, DecodeLongContextSplits) { run({5000, 37}, {1, 1}, "long decode"); }
TEST_P(CudaFp8Attention, Prefill) { run({40, 129, 7, 300}, {40, 129, 7, 300}, "prefill"); }
TEST_P(CudaFp8Attention, PrefillChunksOverCachedBlocks) { run({300, 150, 97}, {100, 70, 97}, "chunked prefill"); }

INSTANTIATE_TEST_SUITE_P(GqaAndHeadDims, CudaFp8Attention,
                         ::testing::Values(Fp8Case{1, 64}, Fp8Case{4, 64}, Fp8Case{8, 128}, Fp8Case{2, 128},
                                           Fp8Case{4, 256}, Fp8Case{2, 8}, Fp8Case{7, 96}),
                         [](const ::testing::TestParamInfo<Fp8Case>& info) {
                           return "g" + std::to_string(info.param.group) + "_hd" + std::to_string(info.param.head_dim);
                         });

}  // namespace
}  // namespace strata
