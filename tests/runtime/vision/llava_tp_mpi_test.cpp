// tests/runtime/vision/llava_tp_mpi_test.cpp: the LLaVA vision tower under tensor parallelism, on the CPU
// backend over MPI: with its heads and MLP columns split over the TP group (and run by the first pipeline
// stage only), an image prompt gives the single-rank run's image features (first stage), expanded ids,
// greedy tokens (which are also transformers', tests/fixtures/vision/llava_t5/ids.json) and logits.
// np 2: TP2, and TP2 of a one-head tower (not divisible: every rank runs it whole); np 4: TP2 x PP2, and TP4
// (one head and 16 MLP columns a rank).
// mpi-np: 2 4
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "mpi_world.h"
#include "parallel/plan_parser.h"
#include "runtime/models/llava_vision.h"
#include "single_rank_reference.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<int32_t> int_list(const boost::json::value& v) {
  std::vector<int32_t> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return out;
}

// max |a - b| / max |b|.
double relative_error(const Tensor& a, const Tensor& b) {
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b.data<float>()[i])));
  }
  return worst / scale;
}

struct VisionLayout {
  std::string name;
  int tp = 1, pp = 1;
  bool one_head = false;  // the fixture with its tower's 4 heads of 8 read as 1 head of 32 (same tensors)
};

// llava_t5 with vision_config.num_attention_heads 1, in this rank's own temporary directory.
std::string one_head_model(const std::string& src) {
  const std::string dir = test::temp_dir("llava_one_head_r" + std::to_string(g_world->rank()));
  for (const char* f : {"model.safetensors", "preprocessor_config.json", "image.png"})
    std::filesystem::copy_file(src + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
  boost::json::value config = boost::json::parse(read_text(src + "/config.json"));
  config.at("vision_config").as_object()["num_attention_heads"] = 1;
  std::ofstream(dir + "/config.json") << boost::json::serialize(config);
  return dir;
}

class VisionLayouts : public ::testing::TestWithParam<VisionLayout> {};

TEST_P(VisionLayouts, ImagePromptsMatchOneRank) {
  const VisionLayout& layout = GetParam();
  if (layout.tp * layout.pp != g_world->size())
    GTEST_SKIP() << layout.name << " needs " << layout.tp * layout.pp << " ranks";
  const std::string fixture_dir = test::fixture("vision/llava_t5");
  const std::string model = layout.one_head ? one_head_model(fixture_dir) : fixture_dir, image = model + "/image.png";
  const boost::json::value fixture = boost::json::parse(read_text(fixture_dir + "/ids.json"));
  const std::vector<int32_t> prompt = int_list(fixture.at("prompt_ids"));
  GenerationRequest request;
  request.max_new_tokens = 8;
  request.sampling.temperature = 0;

  // This rank alone, the whole model and tower.
  launcher::SessionOptions options;
  options.model_path = model;
  options.threads = 1;
  launcher::ModelSession single(options);
  single.prepare(128);
  const ImagePrompt ref = launcher::image_prompt(options, single, prompt, {image});
  request.prompt = ref.ids;
  const std::vector<int32_t> ref_tokens = single.generator().generate({request}, {}, &ref.splice)[0].tokens;
  if (!layout.one_head) {  // transformers' greedy continuation
    ASSERT_EQ(ref_tokens, int_list(fixture.at("greedy_continuation")));
  }
  const Tensor ref_logits = single.generator().score(ref.ids, &ref.splice);

  // The layout.
  const parallel::ParsedPlan parsed =
      parallel::parse_plan(test::plan_yaml(model, {layout.tp, layout.pp, 1, "", false, 60}), layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(128);
  const launcher::VisionPlacement where = launcher::vision_placement(session);
  ASSERT_EQ(where.tp->size(), layout.tp);
  const ImagePrompt got = launcher::image_prompt(options, session, prompt, {image}, where);
  EXPECT_EQ(got.ids, ref.ids) << layout.name;
  EXPECT_EQ(got.splice.positions, ref.splice.positions) << layout.name;
  if (where.first_stage) {
    ASSERT_TRUE(got.splice.rows.defined());
    ASSERT_EQ(got.splice.rows.shape(), ref.splice.rows.shape());
    EXPECT_LT(relative_error(got.splice.rows, ref.splice.rows), 1e-5) << layout.name;
    // The tower this rank ran was split (its share of the 4 heads and 64 MLP columns), or whole (one head).
    const LlavaConfig config = parse_llava_config(read_text(model + "/config.json"), model);
    const LlavaVision tower(config, session.backend(), model, where.tp);
    EXPECT_EQ(tower.shard().split, !layout.one_head);
    if (!layout.one_head) {
      EXPECT_EQ(tower.shard().heads, 4 / layout.tp);
      EXPECT_EQ(tower.shard().ffn_count, 64 / layout.tp);
    }
  } else {
    EXPECT_FALSE(got.splice.rows.defined()) << "a later stage ran the tower";
  }
  request.prompt = got.ids;
  EXPECT_EQ(session.generator().generate({request}, {}, &got.splice)[0].tokens, ref_tokens) << layout.name;
  const Tensor logits = session.generator().score(got.ids, &got.splice);
  ASSERT_EQ(logits.numel(), ref_logits.numel());
  EXPECT_LT(test::max_rel_error(logits.data<float>(), ref_logits.data<float>(), static_cast<size_t>(logits.numel())),
            1e-4)
      << layout.name;
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(Layouts, VisionLayouts,
                         ::testing::Values(VisionLayout{"tp2", 2, 1}, VisionLayout{"tp2_one_head_tower", 2, 1, true},
                                           VisionLayout{"tp2_pp2", 2, 2}, VisionLayout{"tp4", 4, 1}),
                         [](const ::testing::TestParamInfo<VisionLayout>& info) { return info.param.name; });

}  // namespace
}  // namespace strata
