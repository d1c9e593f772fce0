// tests/runtime/moe_gguf_test.cpp: mixture-of-experts GGUF files written by llama.cpp's own converter
// (convert_hf_to_gguf.py, tools/reference/make_moe_gguf_fixtures.py) from the Hugging Face MoE fixtures:
// stacked experts (blk.N.ffn_{gate,up,down}_exps.weight), llama.cpp's metadata keys, Mixtral as arch
// "llama" with permuted q/k rows, Qwen2-MoE's shared expert, experts kept in Q8_0. References:
// transformers' logits and greedy continuation, of the HF fixture (f32 file) or of the weights the gguf
// package dequantizes from the file (f16 and q8_0 files). Bad stacked tensors get named errors.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/gguf.h"
#include "test_util.h"

namespace strata {
namespace {

boost::json::value read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return boost::json::parse(s.str());
}

std::vector<int32_t> int_list(const boost::json::value& v) {
  std::vector<int32_t> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int32_t>(x.as_int64()));
  return out;
}

struct Case {
  std::string model;  // the HF fixture it was converted from
  std::string type;   // the converter's --outtype
  double tolerance;   // max relative error of every logit against the reference
};

std::string gguf_path(const Case& c) { return test::fixture("gguf_moe/" + c.model + "-" + c.type + ".gguf"); }

class MoeGguf : public ::testing::TestWithParam<Case> {};

TEST_P(MoeGguf, LogitsAndGreedyMatchTransformers) {
  const Case& c = GetParam();
  const std::string hf = test::fixture("hf/" + c.model);
  const boost::json::value ids = read_json(hf + "/ids.json");
  // f32: the HF fixture itself; otherwise transformers on the file's dequantized weights.
  const std::string stem = test::fixture("gguf_moe/" + c.model + "-" + c.type);
  const bool exact = c.type == "f32";
  const test::NpyArray expected = test::read_npy(exact ? hf + "/logits.npy" : stem + ".npy");
  const std::vector<int32_t> greedy =
      int_list(exact ? ids.at("greedy_continuation") : read_json(stem + ".json").at("greedy_continuation"));

  launcher::SessionOptions options;
  options.model_path = gguf_path(c);
  launcher::ModelSession session(options);
  session.prepare(256);
  const Tensor logits = session.generator().score(int_list(ids.at("ids")));
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  EXPECT_LT(test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size()), c.tolerance)
      << c.model << " " << c.type;

  GenerationRequest r;
  r.prompt = int_list(ids.at("greedy_prompt"));
  r.max_new_tokens = static_cast<int64_t>(greedy.size());
  EXPECT_EQ(session.generator().generate({r})[0].tokens, greedy) << c.model << " " << c.type;
}

// f32/f16: the HF test's 1e-4. q8_0: the CPU matmul quantizes each activation row to 8 bits as well
// (runtime/cpu/quant_dot.h) and that error compounds over the layers (about 0.02-0.05 here); the greedy
// tokens must still be transformers' exactly.
INSTANTIATE_TEST_SUITE_P(Converted, MoeGguf,
                         ::testing::Values(Case{"mixtral_moe", "f32", 1e-4}, Case{"qwen2_moe", "f16", 1e-4},
                                           Case{"qwen3_moe", "f16", 1e-4}, Case{"mixtral_moe", "q8_0", 0.08},
                                           Case{"qwen2_moe", "q8_0", 0.08}, Case{"qwen3_moe", "q8_0", 0.08}),
                         [](const auto& info) { return info.param.model + "_" + info.param.type; });

// The config from llama.cpp's keys equals the one from the HF config.json, the dense layers included
// (llama.cpp keeps no list of them; strata tells them by their router).
TEST(MoeGgufConfig, EqualsTheHuggingFaceConfig) {
  for (const char* name : {"mixtral_moe", "qwen2_moe", "qwen3_moe"}) {
    const ModelConfig hf = open_checkpoint(test::fixture(std::string("hf/") + name))->config();
    const auto gguf = open_checkpoint(gguf_path({name, name == std::string("mixtral_moe") ? "f32" : "f16", 0}));
    const ModelConfig& g = gguf->config();
    EXPECT_EQ(g.arch, hf.arch) << name;
    EXPECT_EQ(g.moe.n_experts, hf.moe.n_experts) << name;
    EXPECT_EQ(g.moe.n_used, hf.moe.n_used) << name;
    EXPECT_EQ(g.moe.expert_ffn, hf.moe.expert_ffn) << name;
    EXPECT_EQ(g.moe.shared_ffn, hf.moe.shared_ffn) << name;
    EXPECT_EQ(g.moe.norm_topk, hf.moe.norm_topk) << name;
    EXPECT_EQ(g.qkv_bias, hf.qkv_bias) << name;
    EXPECT_EQ(g.qk_norm, hf.qk_norm) << name;
    for (int64_t l = 0; l < hf.n_layers; ++l) EXPECT_EQ(g.moe.sparse_layer(l), hf.moe.sparse_layer(l)) << name << l;
  }
}

// Each expert is a zero-copy view into the stacked tensor, in Q8_0 where the converter quantized it.
TEST(MoeGgufConfig, ExpertsAreSlicesOfTheStackedTensorAndStayQuantized) {
  const auto ckpt = open_checkpoint(gguf_path({"mixtral_moe", "q8_0", 0}));
  const TensorEntry& e0 = ckpt->entry("blk.1.ffn_gate.0.weight");
  const TensorEntry& e3 = ckpt->entry("blk.1.ffn_gate.3.weight");
  EXPECT_EQ(e0.dtype, DType::kQ8_0);
  EXPECT_EQ(e0.shape, (Shape{24, 32}));
  EXPECT_EQ(e3.offset, e0.offset + 3 * e0.nbytes);
  EXPECT_EQ(e0.nbytes, static_cast<uint64_t>(24 * 32 / 32 * 34));
  EXPECT_NE(e3.file_name.find("ffn_gate_exps.weight"), std::string::npos) << e3.file_name;
}

// A copy of a fixture with one tensor info or metadata value changed (rewritten by write_gguf).
std::string rewrite(const std::string& src, const std::string& out,
                    const std::function<void(std::vector<std::pair<std::string, GgufValue>>&,
                                             std::vector<std::pair<std::string, Tensor>>&)>& edit) {
  std::ifstream in(src, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  const GgufFile g = parse_gguf_buffer(bytes.data(), bytes.size(), src);
  std::vector<std::pair<std::string, GgufValue>> md = g.metadata;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const GgufTensorInfo& t : g.tensors) {
    Tensor x = Tensor::empty(t.shape, t.dtype);
    std::memcpy(x.raw(), bytes.data() + t.offset, t.nbytes);
    tensors.emplace_back(t.name, std::move(x));
  }
  edit(md, tensors);
  write_gguf(out, md, tensors);
  return out;
}

std::string open_error(const std::string& path) {
  try {
    open_checkpoint(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MoeGgufErrors, ExpertCountDisagreeingWithTheStackedTensorIsNamed) {
  const std::string dir = test::temp_dir("moe_gguf_errors");
  const std::string src = gguf_path({"mixtral_moe", "q8_0", 0});
  const std::string bad = rewrite(src, dir + "/count.gguf", [](auto& md, auto&) {
    for (auto& [k, v] : md)
      if (k == "llama.expert_count") v = GgufValue::u32(4);
    for (auto& [k, v] : md)
      if (k == "llama.expert_used_count") v = GgufValue::u32(2);
  });
  const std::string msg = open_error(bad);
  EXPECT_NE(msg.find("blk.0.ffn_gate_exps.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("8 experts in its leading dimension"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama.expert_count = 4"), std::string::npos) << msg;
}

TEST(MoeGgufErrors, TwoDimensionalStackIsNamed) {
  const std::string dir = test::temp_dir("moe_gguf_errors");
  const std::string bad = rewrite(gguf_path({"mixtral_moe", "q8_0", 0}), dir + "/flat.gguf", [](auto&, auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "blk.1.ffn_up_exps.weight") t = t.reshape({t.dim(0) * t.dim(1), t.dim(2)});
  });
  const std::string msg = open_error(bad);
  EXPECT_NE(msg.find("blk.1.ffn_up_exps.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3-D"), std::string::npos) << msg;
}

TEST(MoeGgufErrors, MissingExpertCountIsNamed) {
  const std::string dir = test::temp_dir("moe_gguf_errors");
  const std::string bad = rewrite(gguf_path({"qwen2_moe", "q8_0", 0}), dir + "/nocount.gguf", [](auto& md, auto&) {
    std::erase_if(md, [](const auto& kv) { return kv.first == "qwen2moe.expert_count"; });
  });
  const std::string msg = open_error(bad);
  EXPECT_NE(msg.find("qwen2moe.expert_count"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(MoeGgufErrors, MissingExpertTensorIsNamedByItsStack) {
  const std::string dir = test::temp_dir("moe_gguf_errors");
  const std::string bad = rewrite(gguf_path({"qwen3_moe", "q8_0", 0}), dir + "/nodown.gguf", [](auto&, auto& tensors) {
    std::erase_if(tensors, [](const auto& nt) { return nt.first == "blk.3.ffn_down_exps.weight"; });
  });
  const std::string msg = open_error(bad);
  EXPECT_NE(msg.find("blk.3.ffn_down_exps.weight [expert 0]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace strata
