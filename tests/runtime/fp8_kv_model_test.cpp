// tests/runtime/fp8_kv_model_test.cpp: whole models with an fp8 (e4m3) KV cache against references nobody
// here wrote: the trained stories260K (Hugging Face's fp32 teacher-forced logits, llama2.c run.c's greedy
// ids) and the tiny random-weight Hugging Face fixtures (transformers' logits). The logits drift within a
// stated bound, and greedy decoding follows the reference for as long as the reference's top-2 margin is
// larger than twice that drift (past that point a quantization error may legitimately flip a token).
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "test_util.h"

namespace strata {
namespace {

struct Drift {
  double max_abs = 0;   // largest |logit - reference| over every position and token
  double rel = 0;       // max_abs over the largest |reference logit|
  std::vector<double> row_abs;  // largest |logit - reference| of each position
};

Drift drift(const Tensor& logits, const test::NpyArray& ref) {
  Drift d;
  const int64_t rows = ref.shape[0], vocab = ref.shape[1];
  double ref_max = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double worst = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double want = ref.data[static_cast<size_t>(r * vocab + v)];
      worst = std::max(worst, std::fabs(logits.data<float>()[r * vocab + v] - want));
      ref_max = std::max(ref_max, std::fabs(want));
    }
    d.row_abs.push_back(worst);
    d.max_abs = std::max(d.max_abs, worst);
  }
  d.rel = d.max_abs / ref_max;
  return d;
}

// Top-1 minus top-2 logit of row r.
double margin(const float* row, int64_t vocab) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t v = 0; v < vocab; ++v) {
    if (row[v] > a) b = a, a = row[v];
    else if (row[v] > b) b = row[v];
  }
  return static_cast<double>(a) - b;
}

int64_t argmax(const float* row, int64_t vocab) { return std::max_element(row, row + vocab) - row; }

launcher::SessionOptions fp8_options(const std::string& model) {
  launcher::SessionOptions options;
  options.model_path = model;
  options.kv_cache_dtype = DType::kF8_E4M3;
  return options;
}

// stories260K (head_dim 8: an 8-element row per scale, the hardest case): measured max abs drift 2.29 over
// 257 positions against transformers' fp32 logits (0.10 of the largest |logit|; 0.07 at position 0, most
// positions 0.3-1.3).
constexpr double kStoriesDriftBound = 3.5;
// Leading steps whose reference margin exceeds twice the drift at that position: measured 9 (the fp8 run
// then follows run.c's greedy ids for 48 steps in all before a near-tie flips one).
constexpr size_t kStoriesSafeSteps = 8;

TEST(Fp8KvModel, Stories260KDriftsLittleAndFollowsRunCWhileTheMarginAllows) {
  const std::string model = test::shared_model("stories260K/stories260K.bin");
  const std::string npy = test::shared_model("stories260K-hf/golden_logits_hf_fp32.npy");
  const std::string golden_path = test::shared_model("stories260K/run_c_greedy_ids.txt");
  if (model.empty() || npy.empty() || golden_path.empty()) GTEST_SKIP() << "../shared/models is absent";
  const std::vector<int32_t> golden = test::read_ids(golden_path);
  std::vector<int32_t> ids = {1};
  ids.insert(ids.end(), golden.begin(), golden.end());
  const test::NpyArray expected = test::read_npy(npy);
  launcher::ModelSession session(fp8_options(model));
  session.prepare(300);
  ASSERT_EQ(session.kv_cache_dtype(), DType::kF8_E4M3);
  const Tensor logits = session.generator().score(ids);
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(expected.data.size()));
  const Drift d = drift(logits, expected);
  RecordProperty("max_abs_drift", std::to_string(d.max_abs));
  std::printf("stories260K fp8 KV: max abs drift %.4g (relative %.4g)\n", d.max_abs, d.rel);
  // The other cache dtypes on the same logits, for scale: each coarser type drifts more (bf16 keeps 8
  // significant bits, e4m3 4; measured f32 1.6e-5, f16 0.023, bf16 0.20, fp8 2.29).
  double previous = 0;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    launcher::SessionOptions o = fp8_options(model);
    o.kv_cache_dtype = dt;
    launcher::ModelSession other(o);
    other.prepare(300);
    const double abs = drift(other.generator().score(ids), expected).max_abs;
    std::printf("stories260K %s KV: max abs drift %.4g\n", dtype_name(dt), abs);
    EXPECT_GT(abs, previous) << dtype_name(dt);
    EXPECT_LT(abs, d.max_abs) << dtype_name(dt);
    previous = abs;
  }
  EXPECT_LT(d.max_abs, kStoriesDriftBound);
  EXPECT_GT(d.max_abs, 1e-4);  // the cache is quantized: f32 KV stays under 1e-4 relative

  // Greedy with the fp8 cache: run.c's ids up to the first step whose reference margin is within twice the
  // drift measured at that position.
  const int64_t vocab = expected.shape[1];
  size_t safe = 0;
  while (safe < golden.size() && margin(expected.data.data() + safe * vocab, vocab) > 2 * d.row_abs[safe]) ++safe;
  GenerationRequest r;
  r.prompt = {1};
  r.max_new_tokens = static_cast<int64_t>(golden.size());
  const auto out = session.generator().generate({r});
  ASSERT_GE(out[0].tokens.size(), safe);
  std::printf("stories260K fp8 KV: greedy follows run.c for the first %zu steps (margin > 2 x drift)\n", safe);
  EXPECT_GE(safe, kStoriesSafeSteps);  // the check covers a real stretch of the story
  size_t same = 0;
  while (same < golden.size() && out[0].tokens[same] == golden[same]) ++same;
  RecordProperty("matching_prefix", static_cast<int>(same));
  std::printf("stories260K fp8 KV: greedy equals run.c's first %zu ids\n", same);
  EXPECT_EQ(std::vector<int32_t>(out[0].tokens.begin(), out[0].tokens.begin() + static_cast<long>(safe)),
            std::vector<int32_t>(golden.begin(), golden.begin() + static_cast<long>(safe)));
}

// The tiny random-weight fixtures (head_dim 8 and 16, logits within about +-2.5): measured max abs drift
// 0.074 to 0.103 (0.029 to 0.044 of the largest |logit|).
constexpr double kHfDriftBound = 0.2;

class Fp8KvHf : public ::testing::TestWithParam<std::string> {};

TEST_P(Fp8KvHf, LogitsDriftWithinBoundAndKeepEveryClearArgmax) {
  const std::string dir = test::fixture("hf/" + GetParam());
  std::ifstream in(dir + "/ids.json");
  std::stringstream s;
  s << in.rdbuf();
  const boost::json::value fixture = boost::json::parse(s.str());
  std::vector<int32_t> ids;
  for (const auto& x : fixture.at("ids").as_array()) ids.push_back(static_cast<int32_t>(x.as_int64()));
  const test::NpyArray expected = test::read_npy(dir + "/logits.npy");
  launcher::ModelSession session(fp8_options(dir));
  session.prepare(256);
  const Tensor logits = session.generator().score(ids);
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(expected.data.size()));
  const Drift d = drift(logits, expected);
  std::printf("%s fp8 KV: max abs drift %.4g (relative %.4g)\n", GetParam().c_str(), d.max_abs, d.rel);
  EXPECT_LT(d.max_abs, kHfDriftBound) << GetParam();
  const int64_t vocab = expected.shape[1];
  int clear = 0;
  for (int64_t r = 0; r < expected.shape[0]; ++r) {
    const float* want = expected.data.data() + r * vocab;
    if (margin(want, vocab) <= 2 * d.row_abs[static_cast<size_t>(r)]) continue;
    ++clear;
    EXPECT_EQ(argmax(logits.data<float>() + r * vocab, vocab), argmax(want, vocab)) << GetParam() << " position " << r;
  }
  EXPECT_GT(clear, 0) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Configs, Fp8KvHf, ::testing::Values("llama_mha", "llama_gqa_untied", "qwen2_bias", "mistral_mqa"));

}  // namespace
}  // namespace strata
