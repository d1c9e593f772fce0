// tests/runtime/formats/checkpoint_test.cpp: the trained stories260K in its three formats (llama2.c
// .bin, GGUF from llama.cpp's CI, a Hugging Face copy) opens to the same model: the published config
// and bit-identical tensors (after undoing the HF copy's rotate-half q/k permutation).
#include <gtest/gtest.h>

#include <cstring>

#include "runtime/formats/checkpoint.h"
#include "runtime/formats/safetensors.h"
#include "runtime/formats/rope_layout.h"
#include "tests/runtime/formats/test_files.h"

namespace strata {
namespace {

// The numbers published with the model (llama2.c doc/stories260K.md and the README beside it).
void expect_stories_config(const ModelConfig& c) {
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.ffn, 172);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  EXPECT_EQ(c.bos_id, 1);
  ASSERT_EQ(c.eos_ids.size(), 1u);
  EXPECT_EQ(c.eos_ids[0], 2);
}

int tensor_layer(const std::string& name) { return std::atoi(name.c_str() + 4); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(Stories260K, Llama2cBinOpens) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  auto ckpt = open_checkpoint(dir + "/stories260K.bin");
  EXPECT_EQ(ckpt->format(), "llama2c");
  expect_stories_config(ckpt->config());
  EXPECT_EQ(ckpt->config().max_seq, 512);
  EXPECT_TRUE(ckpt->config().tied_embeddings);  // header vocab > 0: shared classifier
  EXPECT_EQ(ckpt->config().rope_style, RopeStyle::kAdjacent);
  EXPECT_FALSE(ckpt->has("output.weight"));
  EXPECT_EQ(ckpt->entry("blk.4.attn_k.weight").shape, (Shape{32, 64}));
  // rms_att_weight of layer 0 starts right after the 512 x 64 embedding and the 28-byte header.
  EXPECT_EQ(ckpt->entry("blk.0.attn_norm.weight").offset, 28u + 512u * 64u * 4u);
  ASSERT_TRUE(ckpt->tokenizer().has_value());  // tok512.bin beside it
  EXPECT_EQ(ckpt->tokenizer()->tokens.size(), 512u);
}

TEST(Stories260K, GgufOpens) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  auto ckpt = open_checkpoint(dir + "/stories260K.gguf");
  EXPECT_EQ(ckpt->format(), "gguf");
  expect_stories_config(ckpt->config());
  EXPECT_EQ(ckpt->config().max_seq, 2048);  // the converter's default, as the README notes
  EXPECT_FALSE(ckpt->config().tied_embeddings);  // this GGUF stores output.weight as a copy
  EXPECT_EQ(ckpt->config().rope_style, RopeStyle::kAdjacent);
  EXPECT_EQ(ckpt->entries().size(), 48u);
  EXPECT_EQ(ckpt->entry("blk.0.ffn_down.weight").shape, (Shape{64, 172}));  // [64, 172] ne0-first reversed
  EXPECT_EQ(ckpt->entry("token_embd.weight").offset, 14176u);  // data section start per the README
  ASSERT_TRUE(ckpt->tokenizer().has_value());
  const TokenizerData& tok = *ckpt->tokenizer();
  EXPECT_EQ(tok.kind, TokenizerKind::kSentencePiece);
  EXPECT_EQ(tok.tokens.size(), 512u);
  EXPECT_EQ(tok.scores.size(), 512u);
  EXPECT_EQ(tok.types.size(), 512u);
  EXPECT_EQ(tok.bos_id, 1);
  EXPECT_EQ(tok.eos_id, 2);
  EXPECT_EQ(tok.unk_id, 0);
  EXPECT_EQ(tok.tokens[3], "<0x00>");
}

TEST(Stories260K, HuggingFaceOpens) {
  STRATA_REQUIRE_SHARED(dir, "stories260K-hf");
  auto ckpt = open_checkpoint(dir);
  EXPECT_EQ(ckpt->format(), "safetensors");
  expect_stories_config(ckpt->config());
  EXPECT_EQ(ckpt->config().max_seq, 512);
  EXPECT_TRUE(ckpt->config().tied_embeddings);
  EXPECT_EQ(ckpt->config().rope_style, RopeStyle::kHalf);
  EXPECT_EQ(ckpt->entries().size(), 47u);
  EXPECT_EQ(ckpt->entry("blk.3.ffn_up.weight").file_name, "model.layers.3.mlp.up_proj.weight");
  EXPECT_TRUE(ckpt->tokenizer().has_value());
}

TEST(Stories260K, BinAndGgufTensorsAreBitIdentical) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  auto bin = open_checkpoint(dir + "/stories260K.bin");
  auto gguf = open_checkpoint(dir + "/stories260K.gguf");
  int compared = 0;
  for (const auto& e : bin->entries()) {
    ASSERT_TRUE(gguf->has(e.name)) << e.name;
    EXPECT_TRUE(same_bytes(bin->tensor(e.name), gguf->tensor(e.name))) << e.name;
    ++compared;
  }
  EXPECT_EQ(compared, 47);
  // The GGUF's separate classifier is the shared embedding of the .bin.
  EXPECT_TRUE(same_bytes(gguf->tensor("output.weight"), bin->tensor("token_embd.weight")));
}

TEST(Stories260K, HuggingFaceEqualsBinAfterRotateHalfPermutation) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  auto bin = open_checkpoint(dir + "/stories260K.bin");
  auto hf = open_checkpoint(hf_dir);
  const ModelConfig& c = bin->config();
  for (const auto& e : bin->entries()) {
    ASSERT_TRUE(hf->has(e.name)) << e.name;
    const Tensor a = bin->tensor(e.name);
    const Tensor b = hf->tensor(e.name);
    const bool is_q = e.name.find("attn_q.weight") != std::string::npos;
    const bool is_k = e.name.find("attn_k.weight") != std::string::npos;
    if (is_q || is_k) {
      const int64_t heads = is_q ? c.n_heads : c.n_kv_heads;
      EXPECT_FALSE(same_bytes(a, b)) << e.name << " should differ before un-permuting";
      EXPECT_TRUE(same_bytes(permute_half_to_adjacent(b, heads), a)) << e.name;
      EXPECT_TRUE(same_bytes(permute_adjacent_to_half(a, heads), b)) << e.name;
    } else {
      EXPECT_TRUE(same_bytes(a, b)) << e.name;
    }
  }
}

TEST(Stories260K, TensorRowsAreViewsAndCountTouchedBytes) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  auto ckpt = open_checkpoint(dir + "/stories260K.gguf");
  EXPECT_EQ(ckpt->bytes_touched(), 0u);
  const Tensor all = ckpt->tensor("blk.1.attn_q.weight");
  const Tensor part = ckpt->tensor_rows("blk.1.attn_q.weight", 16, 8);
  EXPECT_EQ(part.shape(), (Shape{8, 64}));
  EXPECT_EQ(part.data<float>(), all.data<float>() + 16 * 64);
  EXPECT_EQ(ckpt->bytes_touched(), 64u * 64u * 4u + 8u * 64u * 4u);
  test::expect_error([&] { ckpt->tensor_rows("blk.1.attn_q.weight", 60, 8); }, ErrorKind::kInvalidArgument,
               {"blk.1.attn_q.weight", "out of range"});
  test::expect_error([&] { ckpt->entry("blk.9.attn_q.weight"); }, ErrorKind::kFormat, {"blk.9.attn_q.weight", "stories260K.gguf"});
  // Views keep the mapping alive after the checkpoint is gone.
  const float first = all.data<float>()[0];
  ckpt.reset();
  EXPECT_EQ(all.data<float>()[0], first);
}

TEST(Stories260K, ShardedHuggingFaceCopyOpensTheSame) {
  STRATA_REQUIRE_SHARED(hf_dir, "stories260K-hf");
  auto hf = open_checkpoint(hf_dir);
  const std::string dir = test::scratch_dir();
  // Two shards and an index, as transformers writes large models.
  std::vector<std::pair<std::string, Tensor>> shard[2];
  std::string index = R"({"metadata": {}, "weight_map": {)";
  for (size_t i = 0; i < hf->entries().size(); ++i) {
    const auto& e = hf->entries()[i];
    const int s = e.name.find("blk.") == 0 && tensor_layer(e.name) >= 3 ? 1 : 0;
    shard[s].emplace_back(e.file_name, hf->tensor(e.name));
    index += (i ? ", \"" : "\"") + e.file_name + "\": \"model-0000" + std::to_string(s + 1) + "-of-00002.safetensors\"";
  }
  index += "}}";
  for (int s = 0; s < 2; ++s)
    write_safetensors(dir + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors", shard[s]);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    test::write_bytes(dir + "/" + f, test::read_bytes(hf_dir + "/" + f));
  test::write_text_file(dir + "/model.safetensors.index.json", index);
  auto sharded = open_checkpoint(dir);
  ASSERT_EQ(sharded->entries().size(), hf->entries().size());
  for (const auto& e : hf->entries()) EXPECT_TRUE(same_bytes(sharded->tensor(e.name), hf->tensor(e.name))) << e.name;
  EXPECT_NE(sharded->entry("blk.4.attn_q.weight").file, sharded->entry("blk.0.attn_q.weight").file);
  // An index that sends a tensor to the wrong shard is caught.
  std::string bad = index;
  const std::string key = "\"model.norm.weight\": \"model-00001";
  ASSERT_NE(bad.find(key), std::string::npos);
  bad.replace(bad.find(key), key.size(), "\"model.norm.weight\": \"model-00002");
  test::write_text_file(dir + "/model.safetensors.index.json", bad);
  test::expect_error([&] { open_checkpoint(dir); }, ErrorKind::kFormat, {"model.norm.weight", "index.json"});
}

TEST(Stories260K, QuantizedLlama2cExportIsRefusedClearly) {
  STRATA_REQUIRE_SHARED(dir, "stories260K");
  test::expect_error([&] { open_checkpoint(dir + "/stories260K-q8.bin"); }, ErrorKind::kFormat,
                     {"stories260K-q8.bin", "version-2", "not supported"});
}

}  // namespace
}  // namespace strata
