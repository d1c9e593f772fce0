// tests/gpu/vision_gpu_test.cpp: the encoder ops of the CUDA backend (LayerNorm, GELU-family activations,
// bidirectional attention) against the CPU backend on the same inputs; the whole LLaVA vision side (CLIP
// tower + projector of tests/fixtures/vision, whose CPU result matches transformers) on CUDA against the CPU;
// and `strata logits --device cuda --image` against `--device cpu`. bf16 activations round each value to 8
// bits of mantissa, so the bounds are relative to each result's largest magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/models/llava_mmproj.h"
#include "runtime/models/llava_vision.h"
#include "test_util.h"

namespace strata {
namespace {

// max |got - ref| / max |ref|.
double relative_error(const Tensor& got, const Tensor& ref) {
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(got.data<float>()[i]) - ref.data<float>()[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref.data<float>()[i])));
  }
  return worst / scale;
}

// The host values rounded through bf16: both backends then see the very same inputs.
Tensor bf16_rounded(Tensor t) {
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = bf16_to_f32(f32_to_bf16(t.data<float>()[i]));
  return t;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class VisionGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible";
    cpu_ = make_cpu_backend();
    gpu_ = make_cuda_backend(0);
  }
  Tensor to_gpu(const Tensor& host, DType dtype) {
    Tensor d = gpu_->alloc(host.shape(), dtype);
    gpu_->copy(host, d);
    return d;
  }
  Tensor to_host(const Tensor& dev) {
    Tensor h = Tensor::empty(dev.shape(), DType::kF32);
    gpu_->copy(dev, h);
    return h;
  }
  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_F(VisionGpu, LayerNormWithAndWithoutBias) {
  for (const DType dt : {DType::kBF16, DType::kF32}) {
    for (const int64_t d : {int64_t{32}, int64_t{1024}, int64_t{1000}}) {
      Tensor x = test::random_f32({7, d}, 1, 3.f);
      for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 5.f;  // a large mean, as residual streams have
      x = bf16_rounded(x);
      const Tensor w = test::random_f32({d}, 2), b = test::random_f32({d}, 3);
      const Tensor gw = gpu_->upload_weight(w), gb = gpu_->upload_weight(b);
      for (const bool with_bias : {true, false}) {
        Tensor ref = Tensor::empty({7, d}, DType::kF32);
        cpu_->layernorm(x, w, with_bias ? &b : nullptr, 1e-5f, ref);
        Tensor gx = to_gpu(x, dt);
        Tensor gout = gpu_->alloc({7, d}, dt);
        gpu_->layernorm(gx, gw, with_bias ? &gb : nullptr, 1e-5f, gout);
        const double err = relative_error(to_host(gout), ref);
        EXPECT_LT(err, dt == DType::kF32 ? 1e-5 : 1e-2) << dtype_name(dt) << " d=" << d << " bias=" << with_bias;
      }
    }
  }
}

TEST_F(VisionGpu, ActivationsInPlaceAndNot) {
  const Tensor x = bf16_rounded(test::random_f32({5, 333}, 4, 3.f));
  for (const Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kQuickGelu}) {
    Tensor ref = Tensor::empty(x.shape(), DType::kF32);
    cpu_->activation(x, act, ref);
    for (const DType dt : {DType::kF32, DType::kBF16}) {
      Tensor gx = to_gpu(x, dt);
      Tensor gout = gpu_->alloc(x.shape(), dt);
      gpu_->activation(gx, act, gout);
      EXPECT_LT(relative_error(to_host(gout), ref), dt == DType::kF32 ? 1e-6 : 1e-2) << static_cast<int>(act);
      gpu_->activation(gx, act, gx);  // out may be x
      EXPECT_LT(relative_error(to_host(gx), ref), dt == DType::kF32 ? 1e-6 : 1e-2) << static_cast<int>(act);
    }
  }
}

struct AttentionCase {
  int64_t seqs, seq_len, heads, head_dim;
  DType dt, out_dt;
};

class VisionGpuAttention : public VisionGpu, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(VisionGpuAttention, EqualsTheCpuBackend) {
  const AttentionCase c = GetParam();
  const Shape shape = {c.seqs * c.seq_len, c.heads, c.head_dim};
  // Every sequence different, and scores far from uniform (scale 2), so a token attending across a sequence
  // boundary or a wrong head would show.
  const Tensor q = bf16_rounded(test::random_f32(shape, 10, 2.f));
  const Tensor k = bf16_rounded(test::random_f32(shape, 11, 2.f));
  const Tensor v = bf16_rounded(test::random_f32(shape, 12));
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  Tensor ref = Tensor::empty(shape, DType::kF32);
  cpu_->attention_bidirectional(q, k, v, c.seq_len, scale, ref);
  // Both CUDA forms: the tensor-core prefill kernel (bf16, head_dim 64/128) and the cuBLAS GEMMs.
  for (const bool flash : {true, false}) {
    CudaBackendOptions options;
    options.encoder_flash_attention = flash;
    gpu_ = make_cuda_backend(0, options);
    Tensor gq = to_gpu(q, c.dt), gk = to_gpu(k, c.dt), gv = to_gpu(v, c.dt);
    Tensor gout = gpu_->alloc(shape, c.out_dt);
    gpu_->attention_bidirectional(gq, gk, gv, c.seq_len, scale, gout);
    const double err = relative_error(to_host(gout), ref);
    // 16-bit probabilities (as the tensor-core path multiplies them) cost about 2^-8 relative per term.
    EXPECT_LT(err, c.dt == DType::kF32 ? 1e-5 : 2e-2) << "max error relative to max |ref|: " << err << ", flash "
                                                      << flash;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, VisionGpuAttention,
    ::testing::Values(AttentionCase{2, 577, 4, 64, DType::kBF16, DType::kBF16},  // CLIP-L/336's sequence
                      // Query tiles of 64/128 rows holding several sequences, and head_dim 128.
                      AttentionCase{5, 33, 4, 64, DType::kBF16, DType::kBF16},
                      AttentionCase{3, 130, 2, 128, DType::kBF16, DType::kBF16},
                      AttentionCase{3, 17, 3, 40, DType::kBF16, DType::kF32},
                      AttentionCase{3, 17, 3, 40, DType::kF32, DType::kF32},
                      AttentionCase{1, 50, 2, 80, DType::kF16, DType::kF16}));

TEST_F(VisionGpu, BatchesLargerThanOneScoreChunk) {
  // 256 MiB of f32 scores per chunk: 40 sequences of 1024 tokens x 2 heads (8 MiB each) make two chunks.
  const int64_t seqs = 40, len = 1024, heads = 2, hd = 32;
  const Shape shape = {seqs * len, heads, hd};
  const Tensor q = bf16_rounded(test::random_f32(shape, 20, 2.f)), k = bf16_rounded(test::random_f32(shape, 21, 2.f));
  const Tensor v = bf16_rounded(test::random_f32(shape, 22));
  Tensor gq = to_gpu(q, DType::kBF16), gk = to_gpu(k, DType::kBF16), gv = to_gpu(v, DType::kBF16);
  Tensor gout = gpu_->alloc(shape, DType::kBF16);
  gpu_->attention_bidirectional(gq, gk, gv, len, 0.2f, gout);
  const Tensor got = to_host(gout);
  // The CPU reference on the first and the last sequence (each sequence is independent).
  for (const int64_t s : {int64_t{0}, seqs - 1}) {
    const Shape one = {len, heads, hd};
    auto rows = [&](const Tensor& t) {
      Tensor r = Tensor::empty(one, DType::kF32);
      std::copy(t.data<float>() + s * len * heads * hd, t.data<float>() + (s + 1) * len * heads * hd, r.data<float>());
      return r;
    };
    Tensor ref = Tensor::empty(one, DType::kF32);
    cpu_->attention_bidirectional(rows(q), rows(k), rows(v), len, 0.2f, ref);
    EXPECT_LT(relative_error(rows(got), ref), 2e-2) << "sequence " << s;
  }
}

// The whole vision side on CUDA against the CPU backend (itself checked against transformers in
// tests/runtime/vision/llava_vision_test.cpp), from transformers' pixel values, two images in one batch.
class VisionTowerGpu : public VisionGpu, public ::testing::WithParamInterface<std::string> {};

TEST_P(VisionTowerGpu, FeaturesEqualTheCpuBackend) {
  const std::string dir = test::fixture("vision/" + GetParam());
  const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir + "/config.json");
  const test::NpyArray px_ref = test::read_npy(dir + "/pixel_values.npy");
  const int64_t side = config.vision.image_size;
  Tensor px = Tensor::empty({3, side, side}, DType::kF32);
  ASSERT_EQ(px_ref.data.size(), static_cast<size_t>(px.numel()));
  std::copy(px_ref.data.begin(), px_ref.data.end(), px.data<float>());
  Tensor px2 = Tensor::empty(px.shape(), DType::kF32);  // a second, different image
  for (int64_t i = 0; i < px.numel(); ++i) px2.data<float>()[i] = -px.data<float>()[px.numel() - 1 - i];

  LlavaVision cpu_tower(config, *cpu_, dir);
  const Tensor ref = cpu_tower.encode({px, px2});
  LlavaVision gpu_tower(config, *gpu_, dir);
  const Tensor got = to_host(gpu_tower.encode({px, px2}));
  ASSERT_EQ(got.shape(), ref.shape());
  const double err = relative_error(got, ref);
  std::printf("%s: features on CUDA (bf16) vs CPU (f32): max error %.3g of the largest feature\n",
              GetParam().c_str(), err);
  EXPECT_LT(err, 3e-2);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, VisionTowerGpu, ::testing::Values("llava_t5", "llava_t4"));

// LLaVA-NeXT's packed features (every tile of two images through the tower in one batch, then the unpad and
// image_newline packing as row copies on the device) on CUDA against the CPU backend, whose result matches
// transformers (tests/runtime/vision/llava_next_test.cpp).
TEST_F(VisionGpu, LlavaNextPackedFeaturesEqualTheCpuBackend) {
  const std::string dir = test::fixture("vision/llava_next");
  const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir + "/config.json");
  const boost::json::value ref_json = boost::json::parse(read_text(dir + "/reference.json"));
  std::vector<Tensor> pixels;
  std::vector<vision::Resolution> sizes;
  for (const char* name : {"wide.png", "tall.png", "big.png"}) {
    const test::NpyArray a = test::read_npy(dir + "/pixel_values__" + name + ".npy");
    Tensor px = Tensor::empty(Shape(a.shape.begin(), a.shape.end()), DType::kF32);
    std::copy(a.data.begin(), a.data.end(), px.data<float>());
    pixels.push_back(px);
    const auto& img = ref_json.at("images").at(name);
    sizes.push_back({img.at("height").as_int64(), img.at("width").as_int64()});
  }
  LlavaVision cpu_tower(config, *cpu_, dir);
  const Tensor ref = cpu_tower.encode_images(pixels, sizes);
  LlavaVision gpu_tower(config, *gpu_, dir);
  const Tensor got = to_host(gpu_tower.encode_images(pixels, sizes));
  ASSERT_EQ(got.shape(), ref.shape());
  const double err = relative_error(got, ref);
  std::printf("llava_next: %lld packed features on CUDA (bf16) vs CPU (f32): max error %.3g of the largest\n",
              static_cast<long long>(got.dim(0)), err);
  EXPECT_LT(err, 3e-2);
}

// The tower and projector from llama.cpp's mmproj GGUF (f16 patch embedding and projector matrices, f32 the rest)
// on CUDA against the CPU backend (itself checked against transformers in llava_mmproj_test).
TEST_F(VisionGpu, MmprojTowerEqualsTheCpuBackend) {
  const std::string mmproj = test::fixture("vision/llava_gguf/mmproj.gguf");
  const LlavaConfig config = read_mmproj_config(mmproj, 32, 159, "text.gguf");
  const test::NpyArray px_ref = test::read_npy(test::fixture("vision/llava_t5/pixel_values.npy"));
  Tensor px = Tensor::empty({3, config.vision.image_size, config.vision.image_size}, DType::kF32);
  ASSERT_EQ(px_ref.data.size(), static_cast<size_t>(px.numel()));
  std::copy(px_ref.data.begin(), px_ref.data.end(), px.data<float>());
  LlavaVision cpu_tower(config, *cpu_, mmproj);
  const Tensor ref = cpu_tower.encode({px});
  LlavaVision gpu_tower(config, *gpu_, mmproj);
  const Tensor got = to_host(gpu_tower.encode({px}));
  ASSERT_EQ(got.shape(), ref.shape());
  const double err = relative_error(got, ref);
  std::printf("mmproj: features on CUDA vs CPU: max error %.3g of the largest feature\n", err);
  EXPECT_LT(err, 3e-2);
}

// `strata logits --image` on CUDA against the CPU: the same expanded prompt, logits within bf16 noise of the
// logit spread, the same argmax where the top-2 margin is clear.
TEST(VisionCliGpu, LogitsWithAnImageEqualTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible";
  const std::string model = test::fixture("vision/llava_t5");
  const boost::json::value fixture = boost::json::parse(read_text(model + "/ids.json"));
  std::string prompt;
  for (const auto& x : fixture.at("prompt_ids").as_array())
    prompt += (prompt.empty() ? "" : " ") + std::to_string(x.to_number<int64_t>());
  auto logits = [&](const std::string& device) {
    const auto r = test::run_command(test::strata_binary() + " logits --device " + device + " --model " + model +
                                     " --prompt-ids \"" + prompt + "\" --image " + model + "/image.png --all");
    return r;
  };
  const auto cpu = logits("cpu");
  if (cpu.exit_code != 0 && cpu.output.find("without image decoding") != std::string::npos)
    GTEST_SKIP() << "this build has no image codecs";
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  const auto gpu = logits("cuda");
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  const boost::json::value a = boost::json::parse(cpu.output.substr(cpu.output.find('{')));
  const boost::json::value b = boost::json::parse(gpu.output.substr(gpu.output.find('{')));
  ASSERT_EQ(boost::json::serialize(a.at("ids")), boost::json::serialize(b.at("ids")));
  const auto& rows_a = a.at("logits").as_array();
  const auto& rows_b = b.at("logits").as_array();
  ASSERT_EQ(rows_a.size(), rows_b.size());
  double spread = 0, worst = 0;
  int decided = 0, agree = 0;
  for (size_t t = 0; t < rows_a.size(); ++t) {
    const auto& ra = rows_a[t].as_array();
    const auto& rb = rows_b[t].as_array();
    ASSERT_EQ(ra.size(), rb.size());
    std::vector<double> r, g;
    for (size_t v = 0; v < ra.size(); ++v) {
      r.push_back(ra[v].to_number<double>());
      g.push_back(rb[v].to_number<double>());
      worst = std::max(worst, std::fabs(r.back() - g.back()));
    }
    const auto [lo, hi] = std::minmax_element(r.begin(), r.end());
    spread = std::max(spread, *hi - *lo);
    std::vector<double> sorted = r;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<double>());
    if (sorted[0] - sorted[1] > 0.05 * (*hi - *lo)) {
      ++decided;
      agree += std::max_element(r.begin(), r.end()) - r.begin() == std::max_element(g.begin(), g.end()) - g.begin();
    }
  }
  EXPECT_LT(worst, 0.03 * spread) << "max |cuda - cpu| " << worst << " against a logit spread of " << spread;
  EXPECT_EQ(agree, decided);
}

}  // namespace
}  // namespace strata
