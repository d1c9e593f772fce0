// tests/runtime/formats/corrupt_checkpoint_test.cpp: damaged and inconsistent checkpoints fail
// with one kFormat (or kIo) error naming the file and the tensor, never a crash or an
// out-of-bounds read (this suite also runs under ASan/UBSan).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#include "runtime/formats/checkpoint.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/safetensors.h"
#include "tests/runtime/formats/test_files.h"

namespace strata {
namespace {

using test::expect_error;

// An HF directory holding stories260K's tensors as written by write_safetensors, minus `drop`,
// with config.json from the shared copy edited by `edit` (a textual replacement).
std::string stories_hf_copy(const std::string& hf_dir, const std::string& drop = "",
                            std::pair<std::string, std::string> edit = {}) {
  const std::string out = test::scratch_dir();
  auto src = open_checkpoint(hf_dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : src->entries())
    if (e.file_name != drop) tensors.emplace_back(e.file_name, src->tensor(e.name));
  write_safetensors(out + "/model.safetensors", tensors);
  const auto config_bytes = test::read_bytes(hf_dir + "/config.json");
  std::string config(config_bytes.begin(), config_bytes.end());
  if (!edit.first.empty()) {
    const auto pos = config.find(edit.first);
    EXPECT_NE(pos, std::string::npos) << edit.first;
    config.replace(pos, edit.first.size(), edit.second);
  }
  test::write_text_file(out + "/config.json", config);
  return out;
}

// A safetensors file with a hand-written JSON header and `data_bytes` zero bytes of data.
std::string raw_safetensors(const std::string& dir, const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + data_bytes, 0);
  const std::string path = dir + "/model.safetensors";
  test::write_bytes(path, bytes);
  return path;
}

SafetensorsHeader parse_file(const std::string& path) {
  const auto bytes = test::read_bytes(path);
  return parse_safetensors_header(bytes.data(), bytes.size(), path);
}

TEST(CorruptLlama2c, TruncatedFileNamesTheTensor) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/stories260K.bin";
  auto bytes = test::read_bytes(dir + "/stories260K.bin");
  bytes.resize(bytes.size() - 40000);  // cuts into w3 (ffn_up) and everything after it
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "w3[4]", "blk.4.ffn_up.weight", "truncated"});
}

TEST(CorruptLlama2c, ImpossibleHeaderIsRejected) {
  const std::string path = test::scratch_dir() + "/model.bin";
  std::vector<uint8_t> bytes(4096, 0);
  const int32_t header[7] = {64, 172, 5, 8, 3, 512, 512};  // 8 heads over 3 kv heads
  std::memcpy(bytes.data(), header, sizeof(header));
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "n_kv_heads 3", "not a llama2.c model"});
  test::write_bytes(path, {1, 2, 3});
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "too short"});
}

TEST(CorruptLlama2c, FileOfAnotherKindNamesTheFormatsRead) {
  // A text file passed as --model: its bytes read as a header are noise; the error says what is read.
  const std::string path = test::scratch_dir() + "/notes.txt";
  const std::string text = "Once upon a time there was a file that was not a model at all, only words.\n";
  test::write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "not a model checkpoint", "Hugging Face model directory", "GGUF", "llama2.c .bin"});
}

TEST(CorruptGguf, BadMagic) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/bad.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  bytes[3] = 'X';
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "bad magic"});
}

TEST(CorruptGguf, TruncatedFileNamesTheTensor) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/short.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  bytes.resize(bytes.size() - 1000);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "runs past the end", "truncated"});
  bytes.resize(5000);  // inside the metadata
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "truncated GGUF"});
}

// Offset of a tensor info's fields in a GGUF header: name, then n_dims, dims, type, offset.
size_t tensor_info_field(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims, bool offset_field) {
  const size_t at = test::find_bytes(bytes, name) + name.size();
  return at + 4 + 8 * n_dims + (offset_field ? 4 : 0);
}

TEST(CorruptGguf, TensorOffsetPastTheEnd) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/offset.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  const uint64_t far = 1ull << 32;
  std::memcpy(&bytes[tensor_info_field(bytes, "blk.2.ffn_up.weight", 2, true)], &far, 8);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "blk.2.ffn_up.weight", "runs past the end"});
}

TEST(CorruptGguf, UnsupportedTypeNamesTensorAndTypeId) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/iq2xxs.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  const uint32_t iq2_xxs = 16;  // a ggml type strata does not read (Q4_K, 12, it now does)
  std::memcpy(&bytes[tensor_info_field(bytes, "blk.1.attn_v.weight", 2, false)], &iq2_xxs, 4);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "blk.1.attn_v.weight", "type 16", "IQ2_XXS", "supported: "});
  // Q4_K over rows of 64 elements: a type strata reads, on rows that do not hold whole 256-element blocks.
  const uint32_t q4_k = 12;
  std::memcpy(&bytes[tensor_info_field(bytes, "blk.1.attn_v.weight", 2, false)], &q4_k, 4);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "blk.1.attn_v.weight", "Q4_K", "rows of 64 elements", "256-element"});
}

TEST(CorruptGguf, ShapeDisagreeingWithMetadata) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/ffn.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  // llama.feed_forward_length 172 -> 160: every ffn tensor now disagrees with the metadata.
  const size_t key = test::find_bytes(bytes, "llama.feed_forward_length") + std::strlen("llama.feed_forward_length");
  const uint32_t ffn = 160;
  std::memcpy(&bytes[key + 4], &ffn, 4);  // after the u32 value type
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "blk.0.ffn_gate.weight", "[172, 64]", "[160, 64]", "GGUF metadata"});
}

TEST(CorruptGguf, MissingTensor) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  auto src = open_checkpoint(dir + "/stories260K.gguf");
  const std::string path = test::scratch_dir() + "/missing.gguf";
  std::vector<std::pair<std::string, GgufValue>> md;
  const auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  for (const auto& kv : parse_gguf_buffer(bytes.data(), bytes.size(), "stories260K.gguf").metadata) md.push_back(kv);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : src->entries())
    if (e.name != "blk.3.attn_output.weight") tensors.emplace_back(e.name, src->tensor(e.name));
  write_gguf(path, md, tensors);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "blk.3.attn_output.weight", "missing"});
}

TEST(CorruptGguf, MetadataErrors) {
  const std::string dir = test::scratch_dir();
  auto w = Tensor::zeros({2, 32}, DType::kF32);
  const std::string path = dir + "/m.gguf";
  // An array of arrays: written by hand since write_gguf refuses to produce one.
  write_gguf(path, {{"general.architecture", GgufValue::str("llama")}, {"x.list", GgufValue::i32_array({1, 2, 3})}},
             {{"t", w}});
  auto bytes = test::read_bytes(path);
  const size_t type_at = test::find_bytes(bytes, "x.list") + 6 + 4;  // key, then u32 value type (array)
  const uint32_t array = 9;
  std::memcpy(&bytes[type_at], &array, 4);  // element type: array
  expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "nested.gguf"); }, ErrorKind::kFormat,
               {"nested.gguf", "x.list", "array of arrays"});
  // An array count far beyond the file.
  bytes = test::read_bytes(path);
  const uint64_t huge = 1ull << 60;
  std::memcpy(&bytes[type_at + 4], &huge, 8);
  expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "count.gguf"); }, ErrorKind::kFormat,
               {"count.gguf", "x.list", "elements"});
  // Version 1 (32-bit counts) is refused by number.
  bytes = test::read_bytes(path);
  bytes[4] = 1;
  expect_error([&] { parse_gguf_buffer(bytes.data(), bytes.size(), "v1.gguf"); }, ErrorKind::kFormat,
               {"v1.gguf", "version 1"});
  // A GGUF without model metadata is not a model.
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "llama.embedding_length"});
}

TEST(CorruptSafetensors, HeaderLengthPastTheEnd) {
  const std::string dir = test::scratch_dir();
  std::vector<uint8_t> bytes(64, ' ');
  const uint64_t len = 1000;
  std::memcpy(bytes.data(), &len, 8);
  test::write_bytes(dir + "/model.safetensors", bytes);
  expect_error([&] { parse_file(dir + "/model.safetensors"); }, ErrorKind::kFormat,
               {"model.safetensors", "header length 1000", "past the end"});
}

TEST(CorruptSafetensors, DataOffsetsPastTheEnd) {
  const std::string dir = test::scratch_dir();
  const std::string path = raw_safetensors(
      dir, R"({"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,256]}})", 100);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "model.norm.weight", "run past the end"});
}

TEST(CorruptSafetensors, UnknownDtype) {
  const std::string dir = test::scratch_dir();
  const std::string path = raw_safetensors(
      dir, R"({"model.norm.weight":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}})", 32);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "model.norm.weight", "F64"});
}

TEST(CorruptSafetensors, ShapeAndSizeMismatch) {
  const std::string dir = test::scratch_dir();
  const std::string path = raw_safetensors(
      dir, R"({"lm_head.weight":{"dtype":"BF16","shape":[4,8],"data_offsets":[0,32]}})", 32);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "lm_head.weight", "[4, 8]", "needs 64"});
}

TEST(CorruptSafetensors, BrokenJsonAndOverlap) {
  const std::string dir = test::scratch_dir();
  std::string path = raw_safetensors(dir, R"({"a":{"dtype":"F32","shape":[2],)", 8);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "not valid JSON"});
  path = raw_safetensors(dir,
                         R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         16);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "overlap"});
}

TEST(CorruptHuggingFace, MissingTensorNamesBothNames) {
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  const std::string dir = stories_hf_copy(hf_dir, "model.layers.2.mlp.up_proj.weight");
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat,
               {dir, "blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight", "missing"});
}

TEST(CorruptHuggingFace, ConfigDisagreeingWithTensors) {
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  const std::string dir = stories_hf_copy(hf_dir, "", {"\"intermediate_size\": 172", "\"intermediate_size\": 160"});
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat,
               {dir + "/model.safetensors", "model.layers.0.mlp.gate_proj.weight", "[172, 64]", "[160, 64]",
                "config.json"});
}

TEST(CorruptHuggingFace, UntiedConfigWithoutHead) {
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  const std::string dir = stories_hf_copy(hf_dir, "", {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"});
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {dir, "lm_head.weight", "tie_word_embeddings"});
}

TEST(CorruptHuggingFace, BadConfigAndMissingFiles) {
  const std::string dir = test::scratch_dir();
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {dir, "config.json is missing"});
  test::write_text_file(dir + "/config.json", R"({"model_type": "gpt_neox", "hidden_size": 64})");
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {"config.json", "gpt_neox"});
  test::write_text_file(dir + "/config.json", R"({"model_type": "llama", "hidden_size": "64"})");
  expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {"config.json", "hidden_size", "integer"});
  expect_error([&] { open_checkpoint(dir + "/nope.bin"); }, ErrorKind::kIo, {"nope.bin", "does not exist"});
}

// stories260K.gguf rewritten by write_gguf with metadata key `key` set to `value` (added when absent).
std::string stories_gguf_with(const std::string& gguf, const std::string& key, const GgufValue& value) {
  auto src = open_checkpoint(gguf);
  const std::string path = test::scratch_dir() + "/edited.gguf";
  std::vector<std::pair<std::string, GgufValue>> md;
  const auto bytes = test::read_bytes(gguf);
  bool replaced = false;
  for (const auto& kv : parse_gguf_buffer(bytes.data(), bytes.size(), gguf).metadata) {
    md.push_back(kv);
    if (kv.first == key) md.back().second = value, replaced = true;
  }
  if (!replaced) md.emplace_back(key, value);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : src->entries()) tensors.emplace_back(e.name, src->tensor(e.name));
  write_gguf(path, md, tensors);
  return path;
}

// A model whose norm epsilon or RoPE base is NaN, negative or zero loads, then every RMSNorm or
// rotation yields NaN or garbage: refused at load, naming the field.
TEST(CorruptGguf, NormEpsilonAndRopeBaseMustBeUsable) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string gguf = dir + "/stories260K.gguf";
  for (float eps : {std::nanf(""), -1e-5f, 0.f}) {
    const std::string path = stories_gguf_with(gguf, "llama.attention.layer_norm_rms_epsilon", GgufValue::f32(eps));
    expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "rms_norm_eps", "corrupt"});
  }
  for (float theta : {0.f, -10000.f, std::nanf(""), INFINITY}) {
    const std::string path = stories_gguf_with(gguf, "llama.rope.freq_base", GgufValue::f32(theta));
    expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "rope_theta", "corrupt"});
  }
}

// A 4-byte edit to block_count: refused by comparing with the file's tensors, before anything (tensor
// names, tables) is built per layer.
TEST(CorruptGguf, LayerCountBeyondTheFile) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/layers.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  const size_t key = test::find_bytes(bytes, "llama.block_count") + std::strlen("llama.block_count");
  uint32_t type = 0;
  std::memcpy(&type, &bytes[key], 4);
  ASSERT_EQ(type, 4u) << "llama.block_count is expected to be a u32";
  const uint32_t layers = 0x7fffffff;
  std::memcpy(&bytes[key + 4], &layers, 4);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "block_count = 2147483647", "tensors"});
}

// Like tensor_info_field, but found by the name with its length prefix, so "output.weight" is not
// taken for the end of "blk.0.attn_output.weight".
size_t exact_info_field(const std::vector<uint8_t>& bytes, const std::string& name, int n_dims, bool offset_field) {
  std::string key(8, '\0');
  const uint64_t len = name.size();
  std::memcpy(key.data(), &len, 8);
  key += name;
  const size_t at = test::find_bytes(bytes, key) + key.size();
  return at + 4 + 8 * n_dims + (offset_field ? 4 : 0);
}

uint64_t read_u64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v = 0;
  std::memcpy(&v, &b[at], 8);
  return v;
}

TEST(CorruptGguf, TensorsAllAtOffsetZeroOrOverlapping) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/zero.gguf";
  const auto original = test::read_bytes(dir + "/stories260K.gguf");
  auto bytes = original;
  const auto gguf = parse_gguf_buffer(original.data(), original.size(), "stories260K.gguf");
  ASSERT_GE(gguf.tensors.size(), 3u);
  for (const auto& t : gguf.tensors) {
    const uint64_t zero = 0;
    std::memcpy(&bytes[exact_info_field(bytes, t.name, static_cast<int>(t.shape.size()), true)], &zero, 8);
  }
  test::write_bytes(path, bytes);
  // The first tensor is where it belongs; the second is the first one that cannot be.
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "'" + gguf.tensors[1].name + "'", "data offset 0", "corrupt"});
  // One tensor moved onto the one before it (an aligned offset, so only the layout check can tell).
  bytes = original;
  const auto& victim = gguf.tensors[2];
  const size_t field = exact_info_field(bytes, victim.name, static_cast<int>(victim.shape.size()), true);
  const uint64_t onto = read_u64(bytes, exact_info_field(bytes, gguf.tensors[1].name,
                                                           static_cast<int>(gguf.tensors[1].shape.size()), true));
  std::memcpy(&bytes[field], &onto, 8);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat, {path, "'" + victim.name + "'", "corrupt"});
}

TEST(CorruptGguf, RetypedTensorMovesTheLayout) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/retyped.gguf";
  auto bytes = test::read_bytes(dir + "/stories260K.gguf");
  const auto gguf = parse_gguf_buffer(bytes.data(), bytes.size(), "stories260K.gguf");
  // An f32 matrix that is not the last tensor, relabelled f16: half its bytes would be read as weights.
  size_t i = 0;
  while (i + 1 < gguf.tensors.size() && !(gguf.tensors[i].dtype == DType::kF32 && gguf.tensors[i].shape.size() == 2)) ++i;
  ASSERT_LT(i + 1, gguf.tensors.size());
  const uint32_t f16 = 1;
  std::memcpy(&bytes[exact_info_field(bytes, gguf.tensors[i].name, 2, false)], &f16, 4);
  test::write_bytes(path, bytes);
  expect_error([&] { open_checkpoint(path); }, ErrorKind::kFormat,
               {path, "'" + gguf.tensors[i + 1].name + "'", "type or shape of a tensor before it"});
}

TEST(CorruptSafetensors, HeaderLengthOffByOne) {
  const std::string dir = test::scratch_dir();
  // Space-padded JSON, as writers pad it: one byte less still parses, and would shift every tensor.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})" + std::string(6, ' ');
  for (int delta : {-1, 1}) {
    const std::string path = raw_safetensors(dir, header, 8);
    auto bytes = test::read_bytes(path);
    const uint64_t len = header.size() + delta;
    std::memcpy(bytes.data(), &len, 8);
    test::write_bytes(path, bytes);
    expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path});
  }
  const std::string path = raw_safetensors(dir, header, 8);
  auto bytes = test::read_bytes(path);
  const uint64_t shorter = header.size() - 1;
  std::memcpy(bytes.data(), &shorter, 8);
  test::write_bytes(path, bytes);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "header length (" + std::to_string(shorter) + ")"});
}

TEST(CorruptSafetensors, GapsAndTrailingBytes) {
  const std::string dir = test::scratch_dir();
  std::string path = raw_safetensors(dir,
                                     R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                     20);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "'b'", "gap"});
  path = raw_safetensors(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "'a'", "gap"});
  path = raw_safetensors(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 9);
  expect_error([&] { parse_file(path); }, ErrorKind::kFormat, {path, "the data section holds 9 bytes"});
}

TEST(CorruptHuggingFace, UnusableNormEpsilonRopeBaseAndLayerCount) {
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  const auto config_bytes = test::read_bytes(hf_dir + "/config.json");
  const std::string config(config_bytes.begin(), config_bytes.end());
  auto field = [&](const std::string& name) {
    const size_t at = config.find("\"" + name + "\"");
    EXPECT_NE(at, std::string::npos) << name;
    return config.substr(at, config.find_first_of(",}", at) - at);
  };
  const struct {
    std::string from, to, expect;
  } cases[] = {
      {field("rms_norm_eps"), "\"rms_norm_eps\": -1e-05", "rms_norm_eps"},
      {field("rms_norm_eps"), "\"rms_norm_eps\": 0", "rms_norm_eps"},
      {field("rope_theta"), "\"rope_theta\": 0", "rope_theta"},
      {field("num_hidden_layers"), "\"num_hidden_layers\": 2147483647", "num_hidden_layers"},
      {field("num_hidden_layers"), "\"num_hidden_layers\": 4000", "num_hidden_layers = 4000"},
  };
  for (const auto& c : cases) {
    const std::string dir = stories_hf_copy(hf_dir, "", {c.from, c.to});
    expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {"config.json", c.expect});
  }
}

TEST(CorruptWhileMapped, ShrinkingFileIsAnErrorNotACrash) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/shrinks.gguf";
  test::write_bytes(path, test::read_bytes(dir + "/stories260K.gguf"));
  auto ckpt = open_checkpoint(path);
  ckpt->tensor("output.weight");  // fine while intact
  ASSERT_EQ(::truncate(path.c_str(), 20000), 0);
  // output.weight now lies past the end of the file: touching it would raise SIGBUS.
  expect_error([&] { ckpt->tensor("output.weight"); }, ErrorKind::kIo, {path, "changed size while mapped"});
  expect_error([&] { ckpt->tensor_rows("blk.0.attn_q.weight", 0, 1); }, ErrorKind::kIo, {path, "truncated"});
}

TEST(CorruptWhileMapped, VanishedFileIsAnError) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  const std::string path = test::scratch_dir() + "/vanishes.bin";
  test::write_bytes(path, test::read_bytes(dir + "/stories260K.bin"));
  auto ckpt = open_checkpoint(path);
  std::filesystem::remove(path);
  expect_error([&] { ckpt->tensor("token_embd.weight"); }, ErrorKind::kIo, {path, "deleted"});
}

}  // namespace
}  // namespace strata
