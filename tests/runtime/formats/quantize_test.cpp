// tests/runtime/formats/quantize_test.cpp: `strata quantize` (quantize_model) against references nobody here
// wrote. tests/fixtures/quantize/reference.txt (tools/reference/make_quantize_fixtures.py) holds, for one f32
// source and every type: llama-quantize's choice of type per tensor and its squared error, the gguf
// package's quantizer's squared error where it has one, and a checksum of the gguf package's dequantization
// of strata's own output file. The logits of quantized models are checked against Hugging Face's f32 logits
// of the trained stories260K (../shared/models) and against the unquantized random model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "launcher/model_session.h"
#include "runtime/formats/block_quant.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/model_writer.h"
#include "runtime/formats/quantize.h"
#include "runtime/model_presets.h"
#include "tests/runtime/formats/test_files.h"
#include "tests/test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

struct Reference {
  std::string llama_type;  // "-" when the fixture was made without llama-quantize
  double llama_err = -1, gguf_err = -1;
  uint64_t checksum = 0;
};

// type -> tensor -> reference
std::map<std::string, std::map<std::string, Reference>> read_reference() {
  std::ifstream in(test::fixture("quantize/reference.txt"));
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/quantize/reference.txt (tools/reference/make_quantize_fixtures.py)";
  std::map<std::string, std::map<std::string, Reference>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string type, tensor, llama_err, gguf_err;
    Reference r;
    f >> type >> tensor >> r.llama_type >> llama_err >> gguf_err >> r.checksum;
    if (llama_err != "-") r.llama_err = std::stod(llama_err);
    if (gguf_err != "-") r.gguf_err = std::stod(gguf_err);
    out[type][tensor] = r;
  }
  return out;
}

// The fixture's source: make-model --preset tiny --hidden 256 --layers 8 --heads 2 --kv-heads 1 --ffn 288
// --seed 7 --format gguf --dtype f32.
ModelConfig source_config() {
  ModelConfig c = model_preset("tiny");
  c.hidden = 256, c.n_layers = 8, c.n_heads = 2, c.n_kv_heads = 1, c.ffn = 288, c.head_dim = 128;
  return c;
}

const std::string& source_model() {
  static const std::string path = [] {
    MakeModelOptions o;
    o.config = source_config();
    o.format = "gguf";
    o.dtype = "f32";
    o.seed = 7;
    o.out = test::temp_dir("quantize_source") + "/src.gguf";
    make_model(o);
    return o.out;
  }();
  return path;
}

uint64_t checksum(const std::vector<float>& v) {
  uint64_t sum = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    sum += static_cast<uint64_t>(bits) * (2 * static_cast<uint64_t>(i) + 1);
  }
  return sum;
}

std::vector<float> dequantized(const MappedFile& file, const GgufTensorInfo& t) {
  const int64_t n = shape_numel(t.shape);
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = file.data() + t.offset;
  if (t.dtype == DType::kF32) std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
  else if (t.dtype == DType::kF16)
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
  else dequantize_row(t.dtype, p, out.data(), n);
  return out;
}

class QuantizeType : public ::testing::TestWithParam<const char*> {};

// Per tensor: llama-quantize's type; the gguf package's dequantization of the written bytes equals strata's
// bit for bit; the squared error is no larger than the gguf package's quantizer's (legacy types) and than
// llama-quantize's (every type; 0.1% of room for float summation order).
TEST_P(QuantizeType, MatchesLlamaQuantizeTypesAndTheGgufPackage) {
  const std::string type = GetParam();
  const auto reference = read_reference();
  ASSERT_TRUE(reference.count(type)) << type;
  const auto& want = reference.at(type);
  QuantizeOptions o;
  o.model = source_model();
  o.type = type;
  o.out = test::temp_dir("quantize_" + type) + "/out.gguf";
  o.force = true;
  const QuantizeResult result = quantize_model(o);
  EXPECT_EQ(result.tensors.size(), want.size());

  const MappedFile src_file(o.model), out_file(o.out);
  const GgufFile src = parse_gguf_buffer(src_file.data(), src_file.size(), o.model);
  const GgufFile out = parse_gguf_buffer(out_file.data(), out_file.size(), o.out);
  ASSERT_EQ(out.tensors.size(), want.size());
  double ours_total = 0, llama_total = 0;
  for (const GgufTensorInfo& t : out.tensors) {
    ASSERT_TRUE(want.count(t.name)) << type << " " << t.name;
    const Reference& r = want.at(t.name);
    if (r.llama_type != "-") {
      EXPECT_EQ(dtype_name(t.dtype), r.llama_type) << type << " " << t.name;
    }
    const std::vector<float> got = dequantized(out_file, t);
    EXPECT_EQ(checksum(got), r.checksum) << type << " " << t.name << " (" << dtype_name(t.dtype) << ")";
    const GgufTensorInfo* s = nullptr;
    for (const auto& x : src.tensors)
      if (x.name == t.name) s = &x;
    ASSERT_NE(s, nullptr) << t.name;
    const std::vector<float> x = dequantized(src_file, *s);
    double err = 0;
    for (size_t i = 0; i < x.size(); ++i) err += (double{got[i]} - x[i]) * (double{got[i]} - x[i]);
    if (r.gguf_err >= 0) {
      EXPECT_LE(err, r.gguf_err * (1 + 1e-12)) << type << " " << t.name << " vs gguf.quants";
    }
    if (r.llama_err >= 0) {
      EXPECT_LE(err, r.llama_err * 1.001 + 1e-12) << type << " " << t.name << " vs llama-quantize";
      ours_total += err, llama_total += r.llama_err;
    }
  }
  if (llama_total > 0) std::printf("%s: squared error %.6g, llama-quantize %.6g\n", type.c_str(), ours_total, llama_total);
}

INSTANTIATE_TEST_SUITE_P(Types, QuantizeType,
                         ::testing::Values("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m",
                                           "q5_k_m"),
                         [](const ::testing::TestParamInfo<const char*>& p) { return std::string(p.param); });

double relative_rms(const Tensor& a, const float* b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double{a.data<float>()[i]} - b[i];
    num += d * d, den += double{b[i]} * b[i];
  }
  return std::sqrt(num / den);
}

Tensor score(const std::string& path, const std::vector<int32_t>& ids) {
  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  launcher::ModelSession session(options);
  session.prepare(static_cast<int64_t>(ids.size()) + 8);
  return session.generator().score(ids);
}

struct LogitsCase {
  const char* type;
  double max_rel_rms;  // relative RMS error of the logits
};

class QuantizedLogits : public ::testing::TestWithParam<LogitsCase> {};

// The trained stories260K as a Hugging Face f32 directory, quantized (its 64-wide rows take the K-quants'
// 32-element fallbacks): the quantized GGUF's logits against transformers' f32 logits, teacher-forced on
// llama2.c's greedy story. Bounds: about 1.7x what each type measured here (relative RMS: f16 0.0002, q8_0 0.0093
// (with 8-bit activations), q5_1 0.041, q4_k_m 0.049, q4_0 0.090); a wrong q/k layout or scale gives ~1.
TEST_P(QuantizedLogits, TrainedStoriesAgainstTransformersF32) {
  const LogitsCase c = GetParam();
  const std::string hf = test::shared_model("stories260K-hf");
  const std::string npy = test::shared_model("stories260K-hf/golden_logits_hf_fp32.npy");
  const std::string golden = test::shared_model("stories260K/run_c_greedy_ids.txt");
  if (hf.empty() || npy.empty() || golden.empty()) GTEST_SKIP() << "../shared/models is absent";
  QuantizeOptions o;
  o.model = hf;
  o.type = c.type;
  o.out = test::temp_dir(std::string("quantize_stories_") + c.type) + "/model.gguf";
  o.force = true;
  o.f16_fallback = true;  // ffn_down's rows of 172
  quantize_model(o);
  std::vector<int32_t> ids = {1};
  for (int32_t id : test::read_ids(golden)) ids.push_back(id);
  const Tensor logits = score(o.out, ids);
  const test::NpyArray want = test::read_npy(npy);
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(want.data.size()));
  const double err = relative_rms(logits, want.data.data());
  std::printf("stories260K %s: logits relative RMS error vs transformers f32 %.4f\n", c.type, err);
  EXPECT_LT(err, c.max_rel_rms) << c.type;
}

INSTANTIATE_TEST_SUITE_P(Types, QuantizedLogits,
                         ::testing::Values(LogitsCase{"f16", 0.001}, LogitsCase{"q8_0", 0.016},
                                           LogitsCase{"q5_1", 0.07}, LogitsCase{"q4_0", 0.15},
                                           LogitsCase{"q4_k_m", 0.085}),
                         [](const ::testing::TestParamInfo<LogitsCase>& p) { return std::string(p.param.type); });

// The K-quants on rows of 256 (the fixture's random model): quantized logits against the f32 model's. Random
// weights give small logits (relative errors larger than a trained model's); the bounds are about 1.6x what
// each measured (q8_0 0.020 (activations are rounded to 8 bits too), q6_k 0.048, q5_k_m 0.091, q4_k_m 0.158,
// q4_k 0.168); a wrong layout or scale gives ~1.
TEST(Quantize, KQuantLogitsFollowTheF32Model) {
  const std::vector<int32_t> ids = {1, 17, 29, 5, 88, 41, 7, 300, 12, 9};
  const Tensor f32 = score(source_model(), ids);
  for (const LogitsCase c : {LogitsCase{"q8_0", 0.04}, LogitsCase{"q6_k", 0.08}, LogitsCase{"q5_k_m", 0.15},
                             LogitsCase{"q4_k_m", 0.25}, LogitsCase{"q4_k", 0.25}}) {
    QuantizeOptions o;
    o.model = source_model();
    o.type = c.type;
    o.out = test::temp_dir(std::string("quantize_logits_") + c.type) + "/model.gguf";
    o.force = true;
    quantize_model(o);
    const double err = relative_rms(score(o.out, ids), f32.data<float>());
    std::printf("random 256-wide model %s: logits relative RMS error vs f32 %.4f\n", c.type, err);
    EXPECT_LT(err, c.max_rel_rms) << c.type;
  }
}

// The output keeps the source's tokenizer and loads with the same config (HF rotate-half q/k rows become
// GGUF's adjacent pairs: the f16 logits above would be wrong otherwise).
TEST(Quantize, CarriesTheTokenizerAndConfig) {
  const std::string hf = test::shared_model("stories260K-hf");
  if (hf.empty()) GTEST_SKIP() << "../shared/models is absent";
  QuantizeOptions o;
  o.model = hf;
  o.type = "q8_0";
  o.out = test::temp_dir("quantize_carry") + "/model.gguf";
  o.force = true;
  o.f16_fallback = true;
  quantize_model(o);
  const auto a = open_checkpoint(hf), b = open_checkpoint(o.out);
  EXPECT_EQ(b->format(), "gguf");
  EXPECT_EQ(b->config().hidden, a->config().hidden);
  EXPECT_EQ(b->config().n_layers, a->config().n_layers);
  EXPECT_EQ(b->config().n_kv_heads, a->config().n_kv_heads);
  ASSERT_TRUE(a->tokenizer().has_value() && b->tokenizer().has_value());
  EXPECT_EQ(b->tokenizer()->tokens, a->tokenizer()->tokens);
  EXPECT_EQ(b->tokenizer()->bos_id, a->tokenizer()->bos_id);
  const MappedFile f(o.out);
  const GgufFile g = parse_gguf_buffer(f.data(), f.size(), o.out);
  ASSERT_NE(g.find("general.file_type"), nullptr);
  EXPECT_EQ(g.find("general.file_type")->i, 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
}

TEST(Quantize, BadInputIsAClearError) {
  const std::string dir = test::temp_dir("quantize_errors");
  QuantizeOptions o;
  o.model = source_model();
  o.out = dir + "/out.gguf";
  o.type = "q7_k";
  test::expect_error([&] { quantize_model(o); }, ErrorKind::kInvalidArgument, {"q7_k", "q4_k_m", "q8_0"});
  o.type = "q8_0";
  o.out = dir + "/out.bin";
  test::expect_error([&] { quantize_model(o); }, ErrorKind::kInvalidArgument, {"out.bin", ".gguf"});
  o.out = dir + "/exists.gguf";
  std::ofstream(o.out) << "x";
  test::expect_error([&] { quantize_model(o); }, ErrorKind::kInvalidArgument, {"exists.gguf", "--force"});
  o.out = source_model();
  o.force = true;
  test::expect_error([&] { quantize_model(o); }, ErrorKind::kInvalidArgument, {"source model"});

  // Rows of 80 elements: q4_0's 32-element blocks do not divide them, nor do q4_k's fallback's.
  MakeModelOptions m;
  ModelConfig c = model_preset("tiny");
  c.hidden = 80, c.head_dim = 10;
  m.config = c;
  m.format = "gguf";
  m.dtype = "f32";
  m.out = dir + "/odd.gguf";
  make_model(m);
  o.model = m.out;
  o.out = dir + "/odd-q.gguf";
  for (const char* type : {"q4_0", "q4_k_m"}) {
    o.type = type;
    test::expect_error([&] { quantize_model(o); }, ErrorKind::kInvalidArgument,
                       {"odd.gguf", "token_embd.weight", "rows of 80", "--f16-fallback"});
  }
  o.f16_fallback = true;  // then they are f16, as llama-quantize writes them
  o.type = "q4_0";
  const QuantizeResult r = quantize_model(o);
  EXPECT_EQ(r.tensors.front().name, "token_embd.weight");
  EXPECT_EQ(r.tensors.front().dtype, DType::kF16);
}

}  // namespace
}  // namespace strata
