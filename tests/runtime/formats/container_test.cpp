// tests/runtime/formats/container_test.cpp: the GGUF and safetensors containers on their own:
// writer -> parser round trips of every metadata type, dtype and shape, and MappedFile ownership.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "runtime/formats/gguf.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "tests/runtime/formats/test_files.h"

namespace strata {
namespace {

Tensor iota(Shape shape, DType dtype) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  for (int64_t i = 0; i < t.nbytes(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(i * 7 + 1);
  return t;
}

TEST(Gguf, EveryMetadataTypeRoundTrips) {
  const std::string path = test::scratch_dir() + "/all.gguf";
  GgufValue u8;
  u8.type = GgufType::kU8;
  u8.i = 200;
  GgufValue i64;
  i64.type = GgufType::kI64;
  i64.i = -(1ll << 40);
  GgufValue f64;
  f64.type = GgufType::kF64;
  f64.f = 0.125;
  GgufValue u16s;
  u16s.type = GgufType::kArray;
  u16s.array_type = GgufType::kU16;
  u16s.ints = {1, 65535};
  std::vector<std::pair<std::string, GgufValue>> md = {
      {"general.alignment", GgufValue::u32(64)}, {"a.u8", u8},  {"a.i64", i64},
      {"a.f64", f64},                            {"a.u16s", u16s},
      {"a.bool", GgufValue::boolean(true)},      {"a.str", GgufValue::str("h\xc3\xa9llo")},
      {"a.strs", GgufValue::str_array({"", "x", "yz"})},
      {"a.f32s", GgufValue::f32_array({0.5f, -2.f})}, {"a.u64", GgufValue::u64(~0ull)},
  };
  write_gguf(path, md, {{"w", iota({3, 64}, DType::kQ8_0)}, {"n", iota({5}, DType::kF32)}, {"h", iota({2, 3, 4}, DType::kBF16)}});
  MappedFile file(path);
  const GgufFile g = parse_gguf_buffer(file.data(), file.size(), path);
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.alignment, 64u);
  EXPECT_EQ(g.data_offset % 64, 0u);
  ASSERT_EQ(g.metadata.size(), md.size());
  EXPECT_EQ(g.find("a.u8")->i, 200);
  EXPECT_EQ(g.find("a.i64")->i, -(1ll << 40));
  EXPECT_EQ(g.find("a.f64")->f, 0.125);
  EXPECT_EQ(g.find("a.u16s")->ints, (std::vector<int64_t>{1, 65535}));
  EXPECT_EQ(g.find("a.bool")->i, 1);
  EXPECT_EQ(g.find("a.str")->s, "h\xc3\xa9llo");
  EXPECT_EQ(g.find("a.strs")->strings, (std::vector<std::string>{"", "x", "yz"}));
  EXPECT_EQ(g.find("a.f32s")->floats, (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(static_cast<uint64_t>(g.find("a.u64")->i), ~0ull);
  EXPECT_EQ(g.find("nope"), nullptr);
  ASSERT_EQ(g.tensors.size(), 3u);
  EXPECT_EQ(g.tensors[0].shape, (Shape{3, 64}));
  EXPECT_EQ(g.tensors[0].ggml_type, 8u);
  EXPECT_EQ(g.tensors[0].nbytes, 3u * 2 * 34);
  EXPECT_EQ(g.tensors[2].shape, (Shape{2, 3, 4}));
  EXPECT_EQ(g.tensors[2].dtype, DType::kBF16);
  for (const auto& t : g.tensors) EXPECT_EQ(t.offset % 64, 0u) << t.name;
  const Tensor h = iota({2, 3, 4}, DType::kBF16);
  EXPECT_EQ(std::memcmp(file.data() + g.tensors[2].offset, h.raw(), h.nbytes()), 0);
}

TEST(Gguf, EveryByteOfATruncatedFileIsACleanError) {
  const std::string path = test::scratch_dir() + "/small.gguf";
  write_gguf(path, {{"general.architecture", GgufValue::str("llama")}, {"x", GgufValue::str_array({"a", "b"})}},
             {{"t", iota({2, 32}, DType::kQ4_0)}});
  const auto bytes = test::read_bytes(path);
  const GgufFile whole = parse_gguf_buffer(bytes.data(), bytes.size(), path);
  const size_t data_end = whole.tensors.back().offset + whole.tensors.back().nbytes;  // then only padding
  for (size_t n = 0; n < data_end; ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);  // own buffer: ASan sees any overread
    EXPECT_THROW(parse_gguf_buffer(cut.data(), cut.size(), "cut.gguf"), Error) << n;
  }
  EXPECT_NO_THROW(parse_gguf_buffer(bytes.data(), bytes.size(), path));
}

TEST(Safetensors, RoundTripAndEveryTruncation) {
  const std::string path = test::scratch_dir() + "/t.safetensors";
  write_safetensors(path, {{"a", iota({3, 5}, DType::kF16)}, {"b", iota({7}, DType::kI32)}, {"c", iota({}, DType::kF32)}},
                    {{"format", "pt"}});
  const auto bytes = test::read_bytes(path);
  const SafetensorsHeader h = parse_safetensors_header(bytes.data(), bytes.size(), path);
  EXPECT_EQ(h.data_offset % 8, 0u);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].shape, (Shape{3, 5}));
  EXPECT_EQ(h.tensors[1].dtype, DType::kI32);
  EXPECT_EQ(h.tensors[2].shape, Shape{});
  EXPECT_EQ(h.tensors[2].nbytes, 4u);
  ASSERT_EQ(h.metadata.size(), 1u);
  EXPECT_EQ(h.metadata[0].second, "pt");
  const Tensor b = iota({7}, DType::kI32);
  EXPECT_EQ(std::memcmp(bytes.data() + h.tensors[1].offset, b.raw(), b.nbytes()), 0);
  for (size_t n = 0; n + 4 < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    EXPECT_THROW(parse_safetensors_header(cut.data(), cut.size(), "cut"), Error) << n;
  }
  test::expect_error([&] { write_safetensors(path, {{"q", iota({1, 32}, DType::kQ8_0)}}); },
                     ErrorKind::kInvalidArgument, {"q8_0", "safetensors"});
}

TEST(HfNames, MapBothWays) {
  EXPECT_EQ(hf_to_canonical_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(hf_to_canonical_name("model.layers.12.self_attn.q_proj.bias"), "blk.12.attn_q.bias");
  EXPECT_EQ(hf_to_canonical_name("model.layers.0.self_attn.o_proj.weight"), "blk.0.attn_output.weight");
  EXPECT_EQ(hf_to_canonical_name("model.layers.3.post_attention_layernorm.weight"), "blk.3.ffn_norm.weight");
  EXPECT_EQ(hf_to_canonical_name("model.norm.weight"), "output_norm.weight");
  EXPECT_EQ(hf_to_canonical_name("lm_head.weight"), "output.weight");
  EXPECT_FALSE(hf_to_canonical_name("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(hf_to_canonical_name("model.layers.x.mlp.up_proj.weight"));
  EXPECT_EQ(canonical_to_hf_name("blk.7.ffn_down.weight"), "model.layers.7.mlp.down_proj.weight");
}

TEST(HfConfig, ParsesLlama3AndListEos) {
  const ModelConfig c = parse_hf_config(R"({"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
    "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
    "rms_norm_eps":1e-05,"rope_theta":500000.0,"max_position_embeddings":131072,"bos_token_id":128000,
    "eos_token_id":[128001,128008,128009],"tie_word_embeddings":false,
    "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                    "original_max_position_embeddings":8192,"rope_type":"llama3"}})",
                                        "config.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.eos_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_EQ(c.rope_style, RopeStyle::kHalf);
  test::expect_error(
      [] {
        parse_hf_config(R"({"model_type":"llama","hidden_size":64,"intermediate_size":1,"num_hidden_layers":1,
          "num_attention_heads":8,"vocab_size":5,"rope_scaling":{"type":"yarn","factor":4}})",
                        "cfg.json");
      },
      ErrorKind::kFormat, {"cfg.json", "yarn"});
}

TEST(MappedFileTest, MapsMovesAndReportsErrors) {
  const std::string dir = test::scratch_dir();
  test::write_text_file(dir + "/f", "hello");
  MappedFile a(dir + "/f");
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(std::memcmp(a.data(), "hello", 5), 0);
  MappedFile b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.size(), 5u);
  EXPECT_NO_THROW(b.check_intact());
  b.prefetch(0, 5);
  test::write_text_file(dir + "/empty", "");
  MappedFile e(dir + "/empty");
  EXPECT_EQ(e.size(), 0u);
  test::expect_error([&] { MappedFile m(dir + "/absent"); }, ErrorKind::kIo, {"absent", "No such file"});
  test::expect_error([&] { MappedFile m(dir); }, ErrorKind::kIo, {dir, "not a regular file"});
  // Replaced under the same path: a different inode.
  std::filesystem::rename(dir + "/f", dir + "/g");
  test::write_text_file(dir + "/f", "HELLO");
  test::expect_error([&] { b.check_intact(); }, ErrorKind::kIo, {dir + "/f", "replaced"});
}

}  // namespace
}  // namespace strata
