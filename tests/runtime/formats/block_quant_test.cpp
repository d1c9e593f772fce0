// tests/runtime/formats/block_quant_test.cpp: GGUF block-quantized types against the gguf package
// (fixtures from tools/reference/make_quant_fixtures.py): dequantization bit for bit, ggml's quantizers
// byte for byte, strata's own K-quant/IQ4 quantizers by round-trip error; mixed-type GGUF files, and the
// errors for type ids, sizes and row lengths that do not fit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "runtime/formats/block_quant.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/quant_blocks.h"
#include "tests/runtime/formats/test_files.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<uint8_t> fixture_bytes(const std::string& name) {
  std::ifstream in(test::fixture("gguf_quants/" + name), std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture gguf_quants/" << name << " (tools/reference/make_quant_fixtures.py)";
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<float> fixture_floats(const std::string& name) {
  const std::vector<uint8_t> bytes = fixture_bytes(name);
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

class EveryQuantType : public ::testing::TestWithParam<DType> {};

// Random valid blocks (every bit pattern of the codes, f16 scales from f16-subnormal to 4, a zero-scale
// block) dequantize to exactly the floats gguf.quants.dequantize gives.
TEST_P(EveryQuantType, DequantizesBitForBitLikeTheGgufPackage) {
  const DType dt = GetParam();
  const std::vector<uint8_t> blocks = fixture_bytes(std::string(dtype_name(dt)) + ".blocks");
  const std::vector<float> want = fixture_floats(std::string(dtype_name(dt)) + ".f32");
  ASSERT_EQ(static_cast<int64_t>(blocks.size()) % dtype_block_bytes(dt), 0);
  const int64_t n = static_cast<int64_t>(blocks.size()) / dtype_block_bytes(dt) * dtype_block_elems(dt);
  ASSERT_EQ(n, static_cast<int64_t>(want.size()));
  std::vector<float> got(static_cast<size_t>(n));
  dequantize_row(dt, blocks.data(), got.data(), n);
  int mismatches = 0;
  for (int64_t i = 0; i < n && mismatches < 5; ++i)
    if (bits(got[i]) != bits(want[i])) {
      ++mismatches;
      ADD_FAILURE() << dtype_name(dt) << " element " << i << " (block " << i / dtype_block_elems(dt)
                    << "): strata " << got[i] << ", gguf " << want[i];
    }
}

// Quantize -> dequantize keeps each 256-element stretch within an RMS error that the type's bits allow:
// codes of b bits over a block's range give an RMS error near range / 2^b / sqrt(12); the bound is that
// for a normal block's range (about 5 sigma over 32 or 16 elements) with room for the scale's own
// rounding (6-bit sub-scales, f16 super-scales).
TEST_P(EveryQuantType, QuantizeRoundTripStaysWithinItsBitsError) {
  const DType dt = GetParam();
  ASSERT_TRUE(can_quantize(dt));
  const std::vector<float> x = fixture_floats("quant_input.f32");
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(static_cast<size_t>(dtype_bytes(dt, n)));
  quantize_row(dt, x.data(), q.data(), n);
  std::vector<float> y(x.size());
  dequantize_row(dt, q.data(), y.data(), n);
  const double b = dt == DType::kQ8_0 ? 8 : dt == DType::kQ6_K ? 6 : (dt == DType::kQ5_0 || dt == DType::kQ5_1 ||
                   dt == DType::kQ5_K) ? 5 : dt == DType::kQ3_K ? 3 : dt == DType::kQ2_K ? 2 : 4;
  for (int64_t s = 0; s < n; s += 256) {
    double err = 0, amax = 0;
    for (int64_t i = s; i < s + 256; ++i) {
      err += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]);
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
    }
    const double rms = std::sqrt(err / 256);
    const double bound = 2 * amax / std::pow(2.0, b) / std::sqrt(12.0) * 1.6 + 1e-7;
    EXPECT_LT(rms, bound) << dtype_name(dt) << " stretch " << s / 256;
    for (int64_t i = s; i < s + 256; ++i) ASSERT_TRUE(std::isfinite(y[i])) << dtype_name(dt) << " " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Gguf, EveryQuantType,
                         ::testing::ValuesIn(quantized_dtypes()),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

// ggml's own rules (q8_0, q4_0, q4_1, q5_0, q5_1) give the gguf package's bytes exactly.
TEST(BlockQuant, LegacyQuantizersMatchTheGgufPackageByteForByte) {
  const std::vector<float> x = fixture_floats("quant_input.f32");
  for (DType dt : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    const std::vector<uint8_t> want = fixture_bytes(std::string(dtype_name(dt)) + ".quant");
    std::vector<uint8_t> got(static_cast<size_t>(dtype_bytes(dt, static_cast<int64_t>(x.size()))));
    quantize_row(dt, x.data(), got.data(), static_cast<int64_t>(x.size()));
    ASSERT_EQ(got.size(), want.size()) << dtype_name(dt);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << dtype_name(dt) << " byte " << i << " (block " << i / dtype_block_bytes(dt) << ")";
  }
}

TEST(BlockQuant, TypeSizesAndNamesFollowGgml) {
  EXPECT_EQ(dtype_block_elems(DType::kQ4_K), 256);
  EXPECT_EQ(dtype_block_bytes(DType::kQ4_K), 144);
  EXPECT_EQ(dtype_block_bytes(DType::kQ6_K), 210);
  EXPECT_EQ(dtype_block_elems(DType::kQ5_1), 32);
  EXPECT_EQ(dtype_bytes(DType::kIQ4_XS, 512), 272);
  EXPECT_EQ(dtype_from_name("Q4_K"), DType::kQ4_K);
  EXPECT_EQ(dtype_from_name("iq4_nl"), DType::kIQ4_NL);
  EXPECT_EQ(ggml_type_of(DType::kQ6_K), 14u);
  EXPECT_EQ(ggml_type_of(DType::kIQ4_XS), 23u);
  test::expect_error([] { dtype_from_name("q7_k"); }, ErrorKind::kInvalidArgument, {"q7_k", "q4_k", "iq4_xs"});
  test::expect_error([] { dtype_bytes(DType::kQ4_K, 96); }, ErrorKind::kInvalidArgument, {"q4_k", "256"});
}

Tensor quantized(const Shape& shape, DType dt, uint64_t seed) {
  Tensor f = Tensor::empty(shape, DType::kF32);
  uint64_t s = seed;
  for (int64_t i = 0; i < f.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    f.data<float>()[i] = static_cast<float>(static_cast<int64_t>(s >> 40) - (1 << 23)) / (1 << 23);
  }
  if (!dtype_is_quantized(dt)) return f;
  Tensor q = Tensor::empty(shape, dt);
  quantize_row(dt, f.data<float>(), q.raw(), f.numel());
  return q;
}

// A file mixing types as llama-quantize's Q4_K_M does (Q4_K matrices, Q6_K for some, F32 norms, a legacy
// type) parses with each tensor's own type, size and bytes.
TEST(BlockQuant, MixedTypesInOneGgufFile) {
  const std::string path = test::scratch_dir() + "/mixed.gguf";
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"blk.0.attn_q.weight", quantized({4, 512}, DType::kQ4_K, 1)},
      {"blk.0.ffn_down.weight", quantized({3, 256}, DType::kQ6_K, 2)},
      {"blk.0.attn_norm.weight", quantized({512}, DType::kF32, 3)},
      {"blk.0.attn_v.weight", quantized({2, 64}, DType::kQ5_0, 4)},
      {"blk.0.ffn_up.weight", quantized({2, 256}, DType::kIQ4_XS, 5)},
  };
  write_gguf(path, {{"general.architecture", GgufValue::str("llama")}}, tensors);
  MappedFile file(path);
  const GgufFile g = parse_gguf_buffer(file.data(), file.size(), path);
  ASSERT_EQ(g.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    EXPECT_EQ(g.tensors[i].dtype, t.dtype()) << tensors[i].first;
    EXPECT_EQ(g.tensors[i].shape, t.shape()) << tensors[i].first;
    EXPECT_EQ(g.tensors[i].nbytes, static_cast<uint64_t>(t.nbytes())) << tensors[i].first;
    EXPECT_EQ(std::memcmp(file.data() + g.tensors[i].offset, t.raw(), t.nbytes()), 0) << tensors[i].first;
  }
  EXPECT_EQ(g.tensors[0].ggml_type, 12u);
  EXPECT_EQ(g.tensors[1].ggml_type, 14u);
}

// Offset of the u32 type field of tensor `name`'s info record (name, n_dims, dims, type).
size_t type_field(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims) {
  return test::find_bytes(bytes, name) + name.size() + 4 + 8 * static_cast<size_t>(n_dims);
}

std::vector<uint8_t> patched_type(const std::string& path, const std::string& name, uint32_t type) {
  std::vector<uint8_t> bytes = test::read_bytes(path);
  std::memcpy(bytes.data() + type_field(bytes, name, 2), &type, 4);
  return bytes;
}

TEST(BlockQuant, BadTypesSizesAndRowsAreCleanErrors) {
  const std::string path = test::scratch_dir() + "/bad.gguf";
  write_gguf(path, {{"general.architecture", GgufValue::str("llama")}},
             {{"first.weight", quantized({2, 96}, DType::kQ4_0, 1)},
              {"second.weight", quantized({2, 96}, DType::kQ4_0, 2)}});
  const std::vector<uint8_t> good = test::read_bytes(path);
  ASSERT_NO_THROW(parse_gguf_buffer(good.data(), good.size(), path));

  // An id ggml never assigned, and a real ggml type strata does not read (IQ2_XXS = 16).
  for (uint32_t id : {99u, 16u}) {
    const std::vector<uint8_t> bytes = patched_type(path, "first.weight", id);
    test::expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "bad.gguf"); }, ErrorKind::kFormat,
                       {"bad.gguf", "first.weight", "ggml type " + std::to_string(id), id == 16 ? "IQ2_XXS" : "unknown",
                        "supported: ", "Q4_K", "Q6_K", "IQ4_XS"});
  }
  // Declared Q8_0 (34 bytes a block) over Q4_0 bytes (18): the tensor would run into the next one.
  {
    const std::vector<uint8_t> bytes = patched_type(path, "first.weight", 8);
    test::expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "bad.gguf"); }, ErrorKind::kFormat,
                       {"first.weight", "Q8_0", "[2, 96]", "204 bytes", "second.weight", "does not match"});
  }
  // The last tensor declared larger than the file holds.
  {
    const std::vector<uint8_t> bytes = patched_type(path, "second.weight", 8);
    test::expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "bad.gguf"); }, ErrorKind::kFormat,
                       {"second.weight", "q8_0", "runs past the end of the file"});
  }
  // Rows of 96 elements declared Q4_K, whose blocks hold 256.
  {
    const std::vector<uint8_t> bytes = patched_type(path, "first.weight", 12);
    test::expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "bad.gguf"); }, ErrorKind::kFormat,
                       {"first.weight", "Q4_K", "rows of 96 elements", "256-element", "block sizes"});
  }
}

}  // namespace
}  // namespace strata
