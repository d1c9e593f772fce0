// tests/runtime/formats/model_writer_test.cpp: make-model round trips. The same seed written as
// safetensors (rotate-half q/k) and as GGUF (adjacent-pair q/k) is the same model: every tensor is
// equal after the documented permutation, and RoPE'd attention scores agree to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "runtime/formats/block_quant.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/model_writer.h"
#include "runtime/formats/rope_layout.h"
#include "runtime/model_presets.h"
#include "tests/runtime/formats/test_files.h"

namespace strata {
namespace {

std::unique_ptr<Checkpoint> make_and_open(const std::string& dir, const std::string& preset, const std::string& format,
                                          const std::string& dtype, uint64_t seed, int threads = 0) {
  MakeModelOptions o;
  o.preset = preset;
  o.format = format;
  o.dtype = dtype;
  o.seed = seed;
  o.threads = threads;
  o.out = dir + "/" + preset + "-" + dtype + (format == "gguf" ? ".gguf" : "");
  make_model(o);
  return open_checkpoint(make_model_output_path(o));
}

std::vector<float> as_f32(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  const int64_t cols = t.dim(-1);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kF32: v[i] = t.data<float>()[i]; break;
      case DType::kF16: v[i] = f16_to_f32(t.data<uint16_t>()[i]); break;
      case DType::kBF16: v[i] = bf16_to_f32(t.data<uint16_t>()[i]); break;
      default: break;
    }
  }
  if (t.dtype() == DType::kQ8_0)
    for (int64_t r = 0; r < t.numel() / cols; ++r)
      dequantize_row_q8_0(t.data<BlockQ8_0>() + r * cols / kQBlock, v.data() + r * cols, cols);
  if (t.dtype() == DType::kQ4_0)
    for (int64_t r = 0; r < t.numel() / cols; ++r)
      dequantize_row_q4_0(t.data<BlockQ4_0>() + r * cols / kQBlock, v.data() + r * cols, cols);
  return v;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// RoPE of one head vector at position `pos`, in either pairing (closed form, written here on purpose
// rather than taken from the backends).
std::vector<double> rope(const float* x, int64_t d, int64_t pos, RopeStyle style, double theta) {
  std::vector<double> y(x, x + d);
  for (int64_t i = 0; i < d / 2; ++i) {
    const double a = pos * std::pow(theta, -2.0 * i / d);
    const int64_t p0 = style == RopeStyle::kHalf ? i : 2 * i;
    const int64_t p1 = style == RopeStyle::kHalf ? i + d / 2 : 2 * i + 1;
    y[p0] = x[p0] * std::cos(a) - x[p1] * std::sin(a);
    y[p1] = x[p0] * std::sin(a) + x[p1] * std::cos(a);
  }
  return y;
}

// q.k of head `h` (and its kv head) for input vectors u (query position pq) and v (key position pk).
double attention_score(const Checkpoint& ck, int layer, int64_t h, const std::vector<float>& u, int64_t pq,
                       const std::vector<float>& v, int64_t pk) {
  const ModelConfig& c = ck.config();
  const auto wq = as_f32(ck.tensor(cat("blk.", layer, ".attn_q.weight")));
  const auto wk = as_f32(ck.tensor(cat("blk.", layer, ".attn_k.weight")));
  const int64_t d = c.head_dim, kvh = h / (c.n_heads / c.n_kv_heads);
  std::vector<float> q(d), k(d);
  for (int64_t r = 0; r < d; ++r) {
    double sq = 0, sk = 0;
    for (int64_t j = 0; j < c.hidden; ++j) {
      sq += double(wq[(h * d + r) * c.hidden + j]) * u[j];
      sk += double(wk[(kvh * d + r) * c.hidden + j]) * v[j];
    }
    q[r] = float(sq);
    k[r] = float(sk);
  }
  const auto rq = rope(q.data(), d, pq, c.rope_style, c.rope_theta);
  const auto rk = rope(k.data(), d, pk, c.rope_style, c.rope_theta);
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += rq[i] * rk[i];
  return s;
}

TEST(RopeLayout, PermutationMatchesTheDerivation) {
  // d = 8: adjacent rows (0..7) hold half rows 0,4,1,5,2,6,3,7 within each head.
  const int64_t expected[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (int64_t r = 0; r < 16; ++r) {
    EXPECT_EQ(half_row_for_adjacent_row(r, 8), (r / 8) * 8 + expected[r % 8]);
    EXPECT_EQ(adjacent_row_for_half_row(half_row_for_adjacent_row(r, 8), 8), r);
  }
}

TEST(MakeModel, TinySafetensorsAndGgufAreTheSameModel) {
  const std::string dir = test::scratch_dir();
  auto hf = make_and_open(dir, "tiny", "safetensors", "f32", 7);
  auto gg = make_and_open(dir, "tiny", "gguf", "f32", 7);
  const ModelConfig want = model_preset("tiny");
  for (const Checkpoint* ck : {hf.get(), gg.get()}) {
    const ModelConfig& c = ck->config();
    EXPECT_EQ(c.hidden, want.hidden);
    EXPECT_EQ(c.n_layers, want.n_layers);
    EXPECT_EQ(c.n_heads, want.n_heads);
    EXPECT_EQ(c.n_kv_heads, want.n_kv_heads);
    EXPECT_EQ(c.ffn, want.ffn);
    EXPECT_EQ(c.vocab_size, want.vocab_size);
    EXPECT_EQ(c.max_seq, want.max_seq);
    EXPECT_FALSE(c.tied_embeddings);
    ASSERT_TRUE(ck->tokenizer().has_value());
    EXPECT_EQ(static_cast<int64_t>(ck->tokenizer()->tokens.size()), want.vocab_size);
  }
  EXPECT_EQ(hf->config().rope_style, RopeStyle::kHalf);
  EXPECT_EQ(gg->config().rope_style, RopeStyle::kAdjacent);
  EXPECT_EQ(hf->entries().size(), gg->entries().size());
  for (const auto& e : hf->entries()) {
    const Tensor a = hf->tensor(e.name);
    const Tensor b = gg->tensor(e.name);
    EXPECT_TRUE(same_bytes(a, random_model_tensor(want, e.name, 7))) << e.name;
    if (e.name.find("attn_q.") != std::string::npos) {
      EXPECT_TRUE(same_bytes(permute_half_to_adjacent(a, want.n_heads), b)) << e.name;
    } else if (e.name.find("attn_k.") != std::string::npos) {
      EXPECT_TRUE(same_bytes(permute_half_to_adjacent(a, want.n_kv_heads), b)) << e.name;
    } else {
      EXPECT_TRUE(same_bytes(a, b)) << e.name;
    }
  }
  // Same attention scores with each file's own RoPE pairing: the permutation is the right one.
  std::vector<float> u(want.hidden), v(want.hidden);
  for (int64_t i = 0; i < want.hidden; ++i) {
    u[i] = std::sin(0.37f * i);
    v[i] = std::cos(0.11f * i + 1);
  }
  for (int64_t h : {0, 5}) {
    const double s_hf = attention_score(*hf, 1, h, u, 17, v, 3);
    const double s_gg = attention_score(*gg, 1, h, u, 17, v, 3);
    EXPECT_NEAR(s_hf, s_gg, 1e-6 * (1 + std::fabs(s_hf))) << "head " << h;
  }
  // A different seed is a different model.
  EXPECT_FALSE(same_bytes(random_model_tensor(want, "blk.0.attn_q.weight", 7),
                          random_model_tensor(want, "blk.0.attn_q.weight", 8)));
}

TEST(MakeModel, HalfPrecisionFormatsRoundTheSameWay) {
  const std::string dir = test::scratch_dir();
  auto hf = make_and_open(dir, "tiny", "safetensors", "f16", 3);
  auto gg = make_and_open(dir, "tiny", "gguf", "f16", 3);
  EXPECT_EQ(hf->entry("output_norm.weight").dtype, DType::kF16);
  EXPECT_EQ(gg->entry("output_norm.weight").dtype, DType::kF32);  // GGUF keeps norms f32
  EXPECT_EQ(gg->entry("blk.0.ffn_up.weight").dtype, DType::kF16);
  EXPECT_EQ(as_f32(hf->tensor("blk.2.ffn_norm.weight")), as_f32(gg->tensor("blk.2.ffn_norm.weight")));
  EXPECT_TRUE(same_bytes(hf->tensor("blk.2.ffn_down.weight"), gg->tensor("blk.2.ffn_down.weight")));
  const auto norm = as_f32(hf->tensor("output_norm.weight"));
  for (float x : norm) EXPECT_NEAR(x, 1.f, 0.15f);  // 1 + N(0, 0.02): never zero
  auto bf = make_and_open(dir, "tiny", "safetensors", "bf16", 3);
  EXPECT_EQ(bf->entry("token_embd.weight").dtype, DType::kBF16);
}

TEST(MakeModel, QuantizedGgufDequantizesToTheRandomWeights) {
  const std::string dir = test::scratch_dir();
  const ModelConfig c = model_preset("tiny");
  for (const char* dt : {"q8_0", "q4_0"}) {
    auto gg = make_and_open(dir, "tiny", "gguf", dt, 11);
    const auto& e = gg->entry("blk.1.ffn_gate.weight");
    EXPECT_EQ(e.dtype, dtype_from_name(dt));
    const auto got = as_f32(gg->tensor(e.name));
    const Tensor want = random_model_tensor(c, e.name, 11);
    // Per 32-block error bound, in quantization steps (q8_0: amax/127, q4_0: amax/8): half a step for
    // rounding (q4_0: a whole step at the clamped end, +7d maps to 7d), plus the f16 scale's rounding
    // (2^-11 relative, times at most 127 resp. 8 steps).
    const bool q8 = std::string(dt) == "q8_0";
    const float step = q8 ? 1.f / 127.f : 1.f / 8.f;
    const double bound = q8 ? 0.5 + 127.0 / 2048 : 1.0 + 8.0 / 2048;
    double max_rel = 0;
    for (int64_t b = 0; b < want.numel() / kQBlock; ++b) {
      float amax = 0;
      for (int64_t i = 0; i < kQBlock; ++i) amax = std::max(amax, std::fabs(want.data<float>()[b * kQBlock + i]));
      for (int64_t i = 0; i < kQBlock; ++i) {
        const float err = std::fabs(got[b * kQBlock + i] - want.data<float>()[b * kQBlock + i]);
        max_rel = std::max<double>(max_rel, err / (amax * step));
      }
    }
    EXPECT_LE(max_rel, bound + 1e-4) << dt;
    EXPECT_EQ(gg->entry("blk.1.attn_norm.weight").dtype, DType::kF32) << dt;
  }
  MakeModelOptions bad;
  bad.out = dir + "/bad";
  bad.dtype = "q8_0";
  test::expect_error([&] { make_model(bad); }, ErrorKind::kInvalidArgument, {"q8_0", "safetensors"});
}

TEST(MakeModel, Qwen2HasBiasesTiedHeadAndNoPermutation) {
  const std::string dir = test::scratch_dir();
  auto hf = make_and_open(dir, "qwen2-tiny", "safetensors", "f32", 5);
  auto gg = make_and_open(dir, "qwen2-tiny", "gguf", "f32", 5);
  for (const Checkpoint* ck : {hf.get(), gg.get()}) {
    EXPECT_EQ(ck->config().arch, "qwen2");
    EXPECT_TRUE(ck->config().qkv_bias);
    EXPECT_TRUE(ck->config().tied_embeddings);
    EXPECT_EQ(ck->config().rope_style, RopeStyle::kHalf);
    EXPECT_FLOAT_EQ(ck->config().rope_theta, 1000000.f);
    EXPECT_FLOAT_EQ(ck->config().rms_eps, 1e-6f);
    EXPECT_FALSE(ck->has("output.weight"));
  }
  for (const auto& e : hf->entries()) EXPECT_TRUE(same_bytes(hf->tensor(e.name), gg->tensor(e.name))) << e.name;
  EXPECT_EQ(hf->entry("blk.2.attn_k.bias").shape, (Shape{32}));
}

TEST(MakeModel, Llama3ScalingRoundTrips) {
  ModelConfig c = model_preset("llama3-8b-shape");  // its rope settings on a tiny shape
  const ModelConfig tiny = model_preset("tiny");
  c.vocab_size = tiny.vocab_size;
  c.hidden = tiny.hidden;
  c.n_layers = 1;
  c.n_heads = tiny.n_heads;
  c.n_kv_heads = tiny.n_kv_heads;
  c.head_dim = tiny.head_dim;
  c.ffn = tiny.ffn;
  const std::string dir = test::scratch_dir();
  for (const char* format : {"safetensors", "gguf"}) {
    MakeModelOptions o;
    o.config = c;
    o.format = format;
    o.out = dir + "/m" + (std::string(format) == "gguf" ? ".gguf" : "");
    make_model(o);
    auto ck = open_checkpoint(make_model_output_path(o));
    EXPECT_FLOAT_EQ(ck->config().rope_theta, 500000.f) << format;
    EXPECT_FLOAT_EQ(ck->config().rope_scaling.factor, 8.f) << format;
    EXPECT_FLOAT_EQ(ck->config().rope_scaling.high_freq_factor, 4.f) << format;
    EXPECT_EQ(ck->config().rope_scaling.original_max_position, 8192) << format;
  }
}

// make-model --dtype for every GGUF type: each matrix is stored in that type and dequantizes (with the
// gguf-exact dequantize_row) to the random weights within the type's bits: RMS error per 256 elements
// below 1.6 x (2 max|w| / 2^bits / sqrt(12)), the uniform-rounding error over the stretch's range.
TEST(MakeModel, EveryGgufTypeDequantizesToTheRandomWeights) {
  const std::string dir = test::scratch_dir();
  ModelConfig c = model_preset("tiny");
  c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.hidden = 256, c.ffn = 512;
  for (DType dt : quantized_dtypes()) {
    MakeModelOptions o;
    o.config = c;
    o.format = "gguf";
    o.dtype = dtype_name(dt);
    o.seed = 5;
    o.out = dir + "/" + dtype_name(dt) + ".gguf";
    make_model(o);
    const auto gg = open_checkpoint(o.out);
    for (const char* name : {"blk.0.ffn_down.weight", "blk.0.attn_q.weight", "token_embd.weight"}) {
      const auto& e = gg->entry(name);
      ASSERT_EQ(e.dtype, dt) << name;
      if (std::string(name) == "blk.0.attn_q.weight") continue;  // GGUF permutes q rows: type checked only
      const Tensor t = gg->tensor(name);
      std::vector<float> got(static_cast<size_t>(t.numel()));
      dequantize_row(dt, t.raw(), got.data(), t.numel());
      const Tensor want = random_model_tensor(c, name, 5);
      const double bits = dt == DType::kQ8_0 ? 8 : dt == DType::kQ6_K ? 6 : dt == DType::kQ3_K ? 3
                        : dt == DType::kQ2_K ? 2 : (dt == DType::kQ5_0 || dt == DType::kQ5_1 || dt == DType::kQ5_K) ? 5 : 4;
      for (int64_t s = 0; s < want.numel(); s += 256) {
        double err = 0, amax = 0;
        for (int64_t i = s; i < s + 256; ++i) {
          const double w = want.data<float>()[i];
          err += (got[i] - w) * (got[i] - w);
          amax = std::max(amax, std::fabs(w));
        }
        ASSERT_LT(std::sqrt(err / 256), 1.6 * 2 * amax / std::pow(2.0, bits) / std::sqrt(12.0))
            << dtype_name(dt) << " " << name << " elements " << s << "..";
      }
    }
    EXPECT_EQ(gg->entry("blk.0.attn_norm.weight").dtype, DType::kF32) << dtype_name(dt);
  }
}

// The q4_k_m mix, as llama-quantize lays it out: q6_k for the head and for attn_v / ffn_down in layers
// i < n/8, i >= 7n/8 and (i - n/8) % 3 == 2 (n = 8: layers 0, 3, 6, 7), q4_k for every other matrix.
TEST(MakeModel, Q4KMMixesQ4KAndQ6KPerTensor) {
  ModelConfig c = model_preset("tiny");
  c.n_layers = 8, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.hidden = 256, c.ffn = 512;
  MakeModelOptions o;
  o.config = c;
  o.format = "gguf";
  o.dtype = "q4_k_m";
  o.out = test::scratch_dir() + "/mix.gguf";
  make_model(o);
  const auto gg = open_checkpoint(o.out);
  EXPECT_EQ(gg->entry("output.weight").dtype, DType::kQ6_K);
  EXPECT_EQ(gg->entry("token_embd.weight").dtype, DType::kQ4_K);
  EXPECT_EQ(gg->entry("output_norm.weight").dtype, DType::kF32);
  for (int l = 0; l < 8; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const DType more = (l == 0 || l == 3 || l == 6 || l == 7) ? DType::kQ6_K : DType::kQ4_K;
    EXPECT_EQ(gg->entry(p + "attn_v.weight").dtype, more) << l;
    EXPECT_EQ(gg->entry(p + "ffn_down.weight").dtype, more) << l;
    EXPECT_EQ(gg->entry(p + "attn_k.weight").dtype, DType::kQ4_K) << l;
    EXPECT_EQ(gg->entry(p + "ffn_up.weight").dtype, DType::kQ4_K) << l;
  }
}

TEST(MakeModel, BytesDoNotDependOnThreadCount) {
  const std::string dir = test::scratch_dir();
  MakeModelOptions o;
  o.format = "gguf";
  o.dtype = "q4_0";
  o.seed = 42;
  o.threads = 1;
  o.out = dir + "/one.gguf";
  make_model(o);
  o.threads = 3;
  o.out = dir + "/three.gguf";
  make_model(o);
  EXPECT_EQ(test::read_bytes(dir + "/one.gguf"), test::read_bytes(dir + "/three.gguf"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/three.gguf.partial"));
}

}  // namespace
}  // namespace strata
