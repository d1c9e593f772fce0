// tests/e2e/image_cli_test.cpp: `strata generate --image` and `strata logits --image` on a tiny random
// LLaVA (tests/fixtures/vision/llava_t5, made by tools/reference/make_vision_fixtures.py): the greedy
// tokens transformers generates (on one rank and under TP2 x PP2), the last position's logits, the same
// model as llama.cpp's text GGUF + mmproj GGUF pair (--mmproj, plan key model.mmproj), and bad images ending
// the command with a message that names the file; and a LLaVA-NeXT model
// (tests/fixtures/vision/llava_next) given two images of different aspect ratios in one --image list, on one
// rank and under TP2 x PP2 (the second stage expands each <image> by its image's size alone), and the same
// kind of model as llama.cpp's LLaVA-NeXT pair under TP2.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace strata {
namespace {

std::string model() { return test::fixture("vision/llava_t5"); }

boost::json::value fixture_ids() {
  std::ifstream in(model() + "/ids.json");
  std::stringstream s;
  s << in.rdbuf();
  return boost::json::parse(s.str());
}

std::string joined(const boost::json::array& ids) {
  std::string out;
  for (const auto& x : ids) out += (out.empty() ? "" : " ") + std::to_string(x.to_number<int64_t>());
  return out;
}

TEST(ImageCli, GenerateGivesTransformersGreedyTokens) {
  const boost::json::value ids = fixture_ids();
  const auto r = test::run_command(test::strata_binary() + " generate --model " + model() + " --prompt-ids \"" +
                                   joined(ids.at("prompt_ids").as_array()) + "\" --image " + model() +
                                   "/image.png -n 8 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ids: " + joined(ids.at("greedy_continuation").as_array())), std::string::npos) << r.output;
}

TEST(ImageCli, TensorAndPipelineParallelGiveTheSameTokens) {
  // The first stage's two ranks encode the image with the tower's heads and MLP split between them; the
  // second stage only expands the placeholders. The first stage splices the features after the TP
  // all-reduce of the embedding.
  const boost::json::value ids = fixture_ids();
  const std::string plan = test::temp_dir("image_cli") + "/tp2pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n  pipeline: 2\n", model().c_str());
  std::fclose(f);
  const auto r = test::run_command(test::mpirun(4) + test::strata_binary() + " generate --plan " + plan +
                                   " --prompt-ids \"" + joined(ids.at("prompt_ids").as_array()) + "\" --image " +
                                   model() + "/image.png -n 8 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ids: " + joined(ids.at("greedy_continuation").as_array())), std::string::npos) << r.output;
}

TEST(ImageCli, LogitsOfTheExpandedPromptMatchTransformers) {
  const boost::json::value ids = fixture_ids();
  const auto r = test::run_command(test::strata_binary() + " logits --model " + model() + " --prompt-ids \"" +
                                   joined(ids.at("prompt_ids").as_array()) + "\" --image " + model() + "/image.png");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const boost::json::value out = boost::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(joined(out.at("ids").as_array()), joined(ids.at("ids").as_array()));
  const test::NpyArray expected = test::read_npy(model() + "/logits.npy");
  const auto& row = out.at("logits").as_array().back().as_array();
  const int64_t V = expected.shape[1], last = expected.shape[0] - 1;
  ASSERT_EQ(static_cast<int64_t>(row.size()), V);
  std::vector<float> got;
  for (const auto& x : row) got.push_back(static_cast<float>(x.to_number<double>()));
  EXPECT_LT(test::max_rel_error(got.data(), expected.data.data() + last * V, static_cast<size_t>(V)), 1e-4);
}

// llama.cpp's pair (tests/fixtures/vision/llava_gguf, tools/reference/make_mmproj_fixtures.py): the same tiny
// model as a text GGUF plus an mmproj GGUF, against transformers' logits of those weights at every position.
std::string pair(const char* file) { return test::fixture(std::string("vision/llava_gguf/") + file); }

TEST(ImageCli, LlamaCppGgufPairGivesTransformersLogits) {
  const boost::json::value ids = fixture_ids();
  const auto r = test::run_command(test::strata_binary() + " logits --model " + pair("text.gguf") + " --mmproj " +
                                   pair("mmproj.gguf") + " --prompt-ids \"" + joined(ids.at("prompt_ids").as_array()) +
                                   "\" --image " + model() + "/image.png --all");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const boost::json::value out = boost::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(joined(out.at("ids").as_array()), joined(ids.at("ids").as_array()));
  const test::NpyArray expected = test::read_npy(pair("logits.npy"));
  std::vector<float> got;
  for (const auto& row : out.at("logits").as_array())
    for (const auto& x : row.as_array()) got.push_back(static_cast<float>(x.to_number<double>()));
  ASSERT_EQ(got.size(), expected.data.size());
  EXPECT_LT(test::max_rel_error(got.data(), expected.data.data(), got.size()), 1e-4);
}

TEST(ImageCli, GgufPairFromAPlanGivesTheSingleRankTokens) {
  // The prompt as text: the text GGUF's vocabulary holds "<image>", which marks where the image goes.
  const std::string args = " --prompt \"describe <image> the picture\" --image " + model() +
                           "/image.png -n 8 --ignore-eos --print-ids --quiet";
  const auto single = test::run_command(test::strata_binary() + " generate --model " + pair("text.gguf") +
                                        " --mmproj " + pair("mmproj.gguf") + args);
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const size_t at = single.output.find("ids:");
  ASSERT_NE(at, std::string::npos) << single.output;
  const std::string tokens = single.output.substr(at, single.output.find('\n', at) - at);
  // plan key model.mmproj; the tower split over the first stage's two ranks.
  const std::string plan = test::temp_dir("image_cli") + "/gguf_pair_tp2pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\n  mmproj: %s\nparallel:\n  tensor: 2\n  pipeline: 2\n",
               pair("text.gguf").c_str(), pair("mmproj.gguf").c_str());
  std::fclose(f);
  const auto r = test::run_command(test::mpirun(4) + test::strata_binary() + " generate --plan " + plan + args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(tokens), std::string::npos) << tokens << "\n" << r.output;
}

TEST(ImageCli, PlanCheckReadsTheMmprojAgainstTheTextModel) {
  const std::string dir = test::temp_dir("image_cli");
  auto write_plan = [&](const std::string& name, const std::string& mmproj) {
    const std::string plan = dir + "/" + name + ".yaml";
    std::FILE* f = std::fopen(plan.c_str(), "w");
    std::fprintf(f, "model:\n  path: %s\n  mmproj: %s\nparallel:\n  tensor: 2\n", pair("text.gguf").c_str(),
                 mmproj.c_str());
    std::fclose(f);
    return plan;
  };
  const std::string check = test::strata_binary() + " plan --check ";
  const auto good = test::run_command(check + write_plan("pair", pair("mmproj.gguf")));
  ASSERT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("with mmproj " + pair("mmproj.gguf") + " (CLIP tower of 1 layers, 16 image tokens)"),
            std::string::npos) << good.output;
  // The language model given as the mmproj: the check stops naming the file and what it should be.
  const auto bad = test::run_command(check + write_plan("swapped", pair("text.gguf")));
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find(pair("text.gguf") + ": general.architecture is 'llama', not 'clip'"), std::string::npos)
      << bad.output;
}

// llama.cpp's LLaVA-NeXT pair (tests/fixtures/vision/llava_next_gguf, tools/reference/
// make_mmproj_next_fixtures.py) under a plan: the tower split over two ranks, a 2x2 tile grid; transformers'
// greedy tokens, and plan --check says the mmproj tiles.
TEST(ImageCli, LlavaNextGgufPairUnderTensorParallelGivesTransformersTokens) {
  const std::string dir = test::fixture("vision/llava_next_gguf");
  std::ifstream in(dir + "/reference.json");
  std::stringstream s;
  s << in.rdbuf();
  const boost::json::value ref = boost::json::parse(s.str());
  const std::string plan = test::temp_dir("image_cli") + "/next_pair_tp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s/text.gguf\n  mmproj: %s/mmproj.gguf\nparallel:\n  tensor: 2\n", dir.c_str(),
               dir.c_str());
  std::fclose(f);
  const auto check = test::run_command(test::strata_binary() + " plan --check " + plan);
  ASSERT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("16 image tokens per tile; LLaVA-NeXT tiling over 3 grid resolutions"),
            std::string::npos) << check.output;
  const auto r = test::run_command(test::mpirun(2) + test::strata_binary() + " generate --plan " + plan +
                                   " --prompt-ids \"" + joined(ref.at("prompt_ids").as_array()) + "\" --image " +
                                   test::fixture("vision/llava_next/big.png") + " -n 8 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ids: " + joined(ref.at("images").at("big.png").at("greedy").as_array())),
            std::string::npos) << r.output;
}

TEST(ImageCli, BadImagesEndTheCommandWithTheirName) {
  for (const char* bad : {"bomb.png", "no-such.jpg"}) {
    const std::string path = test::fixture(std::string("vision/images/") + bad);
    const auto r = test::run_command(test::strata_binary() + " logits --model " + model() +
                                     " --prompt-ids \"1 159 5\" --image " + path);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  }
}

TEST(ImageCli, LlavaNextTwoImagesGiveTransformersGreedyTokens) {
  const std::string next = test::fixture("vision/llava_next");
  std::ifstream in(next + "/reference.json");
  std::stringstream text;
  text << in.rdbuf();
  const boost::json::value ref = boost::json::parse(text.str());
  const std::string plan = test::temp_dir("image_cli") + "/next_tp2pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n  pipeline: 2\n", next.c_str());
  std::fclose(f);
  const std::string args = " --prompt-ids \"" + joined(ref.at("prompt_ids").as_array()) + "\" --image " + next +
                           "/wide.png," + next + "/tall.png -n 8 --ignore-eos --print-ids";
  for (const std::string& launch : {test::strata_binary() + " generate --model " + next,
                                    test::mpirun(4) + test::strata_binary() + " generate --plan " + plan}) {
    const auto r = test::run_command(launch + args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("ids: " + joined(ref.at("greedy").as_array())), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace strata
