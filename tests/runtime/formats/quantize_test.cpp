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
#include "runtime/models/model_description.h"
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

// The fixture's sources: make-model --preset tiny --hidden 256 --layers 8 --heads 2 --kv-heads 1 --ffn 288
// --seed 7 --format gguf --dtype f32; "gqa4" has --heads 4 (4 query heads per kv head, head_dim 64).
ModelConfig source_config(const std::string& variant = "") {
  ModelConfig c = model_preset("tiny");
  c.hidden = 256, c.n_layers = 8, c.n_heads = 2, c.n_kv_heads = 1, c.ffn = 288, c.head_dim = 128;
  if (variant == "gqa4") c.n_heads = 4, c.head_dim = 64;
  return c;
}

const std::string& source_model(const std::string& variant = "") {
  static std::map<std::string, std::string> paths;
  auto it = paths.find(variant);
  if (it != paths.end()) return it->second;
  MakeModelOptions o;
  o.config = source_config(variant);
  o.format = "gguf";
  o.dtype = "f32";
  o.seed = 7;
  o.out = test::temp_dir("quantize_source" + variant) + "/src.gguf";
  make_model(o);
  return paths.emplace(variant, o.out).first->second;
}

// "type" or "type@variant" -> (type, variant).
std::pair<std::string, std::string> split_key(const std::string& key) {
  const size_t at = key.find('@');
  return at == std::string::npos ? std::make_pair(key, std::string()) : std::make_pair(key.substr(0, at), key.substr(at + 1));
}

std::map<std::string, int64_t> read_file_types() {
  std::ifstream in(test::fixture("quantize/file_types.txt"));
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/quantize/file_types.txt (tools/reference/make_quantize_fixtures.py)";
  std::map<std::string, int64_t> out;
  std::string line, type;
  int64_t id = 0;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#' && std::istringstream(line) >> type >> id) out[type] = id;
  return out;
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

// "q2_k@gqa4" -> "q2_k_gqa4" (test names take no '@').
std::string key_test_name(const std::string& key) {
  const auto [type, variant] = split_key(key);
  return variant.empty() ? type : type + "_" + variant;
}

class QuantizeType : public ::testing::TestWithParam<const char*> {};

// Per tensor: llama-quantize's type; the gguf package's dequantization of the written bytes equals strata's
// bit for bit; the squared error is no larger than the gguf package's quantizer's (legacy types) and than
// llama-quantize's (every type: the quantizers follow ggml's importance-free methods; 0.1% of room for float
// summation order). The file's general.file_type is llama-quantize's.
TEST_P(QuantizeType, MatchesLlamaQuantizeTypesAndTheGgufPackage) {
  const std::string key = GetParam();
  const auto [type, variant] = split_key(key);
  const auto reference = read_reference();
  ASSERT_TRUE(reference.count(key)) << key;
  const auto& want = reference.at(key);
  QuantizeOptions o;
  o.model = source_model(variant);
  o.type = type;
  o.out = test::temp_dir("quantize_" + type + variant) + "/out.gguf";
  o.force = true;
  const QuantizeResult result = quantize_model(o);
  EXPECT_EQ(result.tensors.size(), want.size());

  const MappedFile src_file(o.model), out_file(o.out);
  const GgufFile src = parse_gguf_buffer(src_file.data(), src_file.size(), o.model);
  const GgufFile out = parse_gguf_buffer(out_file.data(), out_file.size(), o.out);
  ASSERT_EQ(out.tensors.size(), want.size());
  const auto file_types = read_file_types();
  ASSERT_TRUE(file_types.count(type)) << type;
  ASSERT_NE(out.find("general.file_type"), nullptr);
  EXPECT_EQ(out.find("general.file_type")->i, file_types.at(type)) << type;
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
  if (llama_total > 0) std::printf("%s: squared error %.6g, llama-quantize %.6g\n", key.c_str(), ours_total, llama_total);
}

INSTANTIATE_TEST_SUITE_P(Types, QuantizeType,
                         ::testing::Values("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m",
                                           "q5_k_m", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "iq4_nl", "iq4_xs",
                                           "q2_k@gqa4", "iq4_nl@gqa4", "iq4_xs@gqa4"),
                         [](const ::testing::TestParamInfo<const char*>& p) { return key_test_name(p.param); });

// llama-quantize --dry-run's types for every matrix of an 80-layer source (tests/fixtures/quantize/
// mix_80_layers.txt): the layer rules at n/16, n/8 and every third layer, and llama.cpp's 70B class (80
// layers with grouped kv heads), whose q3_K / q4_K attn_v become q5_K. choose_tensor_type alone (the file
// would be 58 MB): the same names, shapes and model description the quantizer passes it.
TEST(Quantize, MixOfAnEightyLayerModelFollowsLlamaQuantize) {
  ModelConfig c = model_preset("70b-shape");
  c.hidden = 256, c.ffn = 256, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = 64, c.vocab_size = 512;
  const QuantMixModel mix = quant_mix_model(c, /*has_output=*/true);
  EXPECT_TRUE(mix.is_70b);
  EXPECT_EQ(mix.n_gqa, 4);
  std::ifstream in(test::fixture("quantize/mix_80_layers.txt"));
  ASSERT_TRUE(in.good()) << "missing tests/fixtures/quantize/mix_80_layers.txt (tools/reference/make_quantize_fixtures.py)";
  std::map<std::string, Shape> shapes;  // kind -> shape
  for (const TensorRef& t : model_tensors(c)) {
    const size_t dot = t.name.find('.', 4);
    const std::string kind = t.name.rfind("blk.", 0) == 0 ? t.name.substr(dot + 1) : t.name;
    shapes[kind.substr(0, kind.size() - std::string(".weight").size())] = t.slot->full_shape(c);
  }
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string type, kind, want;
    f >> type >> kind;
    ASSERT_TRUE(shapes.count(kind)) << kind;
    const QuantRecipe recipe = quant_recipe(type);
    for (int64_t layer = 0; f >> want; ++layer) {
      const std::string name =
          kind == "output" || kind == "token_embd" ? kind + ".weight" : cat("blk.", layer, ".", kind, ".weight");
      const TensorTypeChoice got = choose_tensor_type(recipe, name, shapes.at(kind), mix, false);
      EXPECT_EQ(dtype_name(got.dtype), want) << type << " " << name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16 * (2 + 7 * 80));
}

// llama-quantize's names: q3_k, q4_k and q5_k are its Q3_K, Q4_K and Q5_K (= the _M mixes).
TEST(Quantize, RecipeNamesAndFileTypes) {
  EXPECT_EQ(quant_recipe("q3_k").file_type, 12u);
  EXPECT_EQ(quant_recipe("Q3_K_L").file_type, 13u);
  EXPECT_EQ(quant_recipe("q2_k").base, DType::kQ2_K);
  EXPECT_EQ(quant_recipe("iq4_xs").file_type, 30u);
  EXPECT_EQ(quant_recipe("q4_k").file_type, 15u);
}

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
// (with 8-bit activations), q5_1 0.041, q4_k_m 0.049, q4_0 0.090, iq4_nl 0.079); a wrong q/k layout or scale
// gives ~1.
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
                                           LogitsCase{"q4_k_m", 0.085}, LogitsCase{"iq4_nl", 0.135}),
                         [](const ::testing::TestParamInfo<LogitsCase>& p) { return std::string(p.param.type); });

// The K-quants on rows of 256 (the fixture's random model): quantized logits against the f32 model's. Random
// weights give small logits (relative errors larger than a trained model's); the bounds are about 1.6x what
// each measured (q8_0 0.020 (activations are rounded to 8 bits too), q6_k 0.048, q5_k_m 0.091, q4_k_m 0.158,
// q4_k 0.168, iq4_xs 0.192, iq4_nl 0.206, q3_k_l 0.175, q3_k_m 0.212, q3_k_s 0.364, q2_k 0.441); a wrong layout
// or scale gives ~1.
TEST(Quantize, KQuantLogitsFollowTheF32Model) {
  const std::vector<int32_t> ids = {1, 17, 29, 5, 88, 41, 7, 300, 12, 9};
  const Tensor f32 = score(source_model(), ids);
  for (const LogitsCase c : {LogitsCase{"q8_0", 0.04}, LogitsCase{"q6_k", 0.08}, LogitsCase{"q5_k_m", 0.15},
                             LogitsCase{"q4_k_m", 0.25}, LogitsCase{"q4_k", 0.25}, LogitsCase{"iq4_xs", 0.31},
                             LogitsCase{"iq4_nl", 0.33}, LogitsCase{"q3_k_l", 0.28}, LogitsCase{"q3_k_m", 0.34},
                             LogitsCase{"q3_k_s", 0.58}, LogitsCase{"q2_k", 0.70}}) {
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
