// tests/runtime/vision/llava_next_test.cpp: LLaVA-NeXT (LlavaNextForConditionalGeneration) on the CPU
// against transformers (tools/reference/make_llava_next_fixtures.py: a tiny random model with
// image_grid_pinpoints [[32, 64], [64, 32], [64, 64]] and a 32-pixel CLIP tower): the anyres tiles of
// three images of different aspect ratios against LlavaNextImageProcessorPil's pixel_values (within one
// 8-bit level, as preprocess_test), the <image> token count of each against LlavaNextProcessor's, the
// packed image features (base tile, unpadded grid, image_newline per row) of a two-image prompt against
// get_image_features, and that prompt's logits at every position and greedy continuation.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/models/llava_vision.h"
#include "runtime/vision/anyres.h"
#include "runtime/vision/preprocess.h"
#include "test_util.h"

namespace strata {
namespace {

const char* const kImages[] = {"wide.png", "tall.png", "big.png"};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string dir() { return test::fixture("vision/llava_next"); }

boost::json::value reference() { return boost::json::parse(read_text(dir() + "/reference.json")); }

std::vector<int32_t> ids_at(const boost::json::value& ref, const char* key) {
  std::vector<int32_t> out;
  for (const auto& x : ref.at(key).as_array()) out.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return out;
}

LlavaConfig config() { return parse_llava_config(read_text(dir() + "/config.json"), dir() + "/config.json"); }

Tensor tensor_of(const test::NpyArray& a) {
  Tensor t = Tensor::empty(Shape(a.shape.begin(), a.shape.end()), DType::kF32);
  std::copy(a.data.begin(), a.data.end(), t.data<float>());
  return t;
}

TEST(LlavaNext, TilesMatchTransformersPixelValues) {
  const vision::ImageProcessorConfig processor = vision::load_image_processor_config(dir());
  ASSERT_TRUE(processor.anyres());
  EXPECT_FALSE(processor.do_pad);  // LlavaNextImageProcessor's do_pad is batch padding, not a square pad
  const boost::json::value ref = reference();
  for (const char* name : kImages) {
    const vision::RgbImage image = vision::read_image_file(dir() + "/" + name);
    const Tensor px = vision::preprocess_image(image, processor);
    const test::NpyArray want = test::read_npy(dir() + "/pixel_values__" + name + ".npy");
    ASSERT_EQ(px.shape(), Shape(want.shape.begin(), want.shape.end())) << name;
    EXPECT_EQ(px.dim(0), ref.at("images").at(name).at("tiles").as_int64()) << name;
    EXPECT_EQ(px.dim(0), config().tiles_for(image.height, image.width)) << name;
    const int64_t plane = px.dim(2) * px.dim(3);
    double worst = 0;
    for (int64_t i = 0; i < px.numel(); ++i) {
      const double levels = std::fabs(px.data<float>()[i] - want.data[static_cast<size_t>(i)]) *
                            processor.image_std[static_cast<size_t>((i / plane) % 3)] * 255.0;
      worst = std::max(worst, levels);
    }
    std::printf("%-9s %s max difference %.4f/255\n", name, shape_str(px.shape()).c_str(), worst);
    EXPECT_LE(worst, 1.0 + 1e-3) << name;
  }
}

TEST(LlavaNext, ImageTokenCountsMatchTheProcessor) {
  const LlavaConfig c = config();
  ASSERT_TRUE(c.anyres());
  const boost::json::value ref = reference();
  for (const char* name : kImages) {
    const auto& img = ref.at("images").at(name);
    EXPECT_EQ(c.features_for(img.at("height").as_int64(), img.at("width").as_int64()),
              img.at("image_tokens").as_int64())
        << name;
  }
  // The pinpoint choice: most kept pixels, then least padding, first among equals.
  const std::vector<vision::Resolution> pins = {{32, 64}, {64, 32}, {64, 64}};
  EXPECT_EQ(vision::select_best_resolution({30, 50}, pins), (vision::Resolution{32, 64}));
  EXPECT_EQ(vision::select_best_resolution({44, 28}, pins), (vision::Resolution{64, 32}));
  EXPECT_EQ(vision::select_best_resolution({60, 70}, pins), (vision::Resolution{64, 64}));
  EXPECT_EQ(vision::select_best_resolution({10, 10}, pins), (vision::Resolution{32, 64}));
  EXPECT_THROW((void)c.features_for(0, 10), Error);
}

double relative_error(const Tensor& got, const test::NpyArray& ref) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < ref.data.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(got.data<float>()[i]) - ref.data[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref.data[i])));
  }
  return worst / scale;
}

TEST(LlavaNext, PackedFeaturesMatchTransformers) {
  auto backend = make_cpu_backend();
  const LlavaConfig c = config();
  const test::NpyArray want = test::read_npy(dir() + "/image_features.npy");
  LlavaVision tower(c, *backend, dir());
  std::vector<Tensor> reference_pixels, file_pixels;
  std::vector<vision::Resolution> sizes;
  const vision::ImageProcessorConfig processor = vision::load_image_processor_config(dir());
  for (const char* name : {"wide.png", "tall.png"}) {
    const vision::RgbImage image = vision::read_image_file(dir() + "/" + name);
    sizes.push_back({image.height, image.width});
    reference_pixels.push_back(tensor_of(test::read_npy(dir() + "/pixel_values__" + name + ".npy")));
    file_pixels.push_back(vision::preprocess_image(image, processor));
  }
  const Tensor from_reference = tower.encode_images(reference_pixels, sizes);
  ASSERT_EQ(from_reference.shape(), Shape(want.shape.begin(), want.shape.end()));
  const double model_err = relative_error(from_reference, want);
  const double path_err = relative_error(tower.encode_images(file_pixels, sizes), want);
  std::printf("%lld packed features: relative error %.3g (transformers' pixel values), %.3g (strata's)\n",
              static_cast<long long>(want.shape[0]), model_err, path_err);
  EXPECT_LT(model_err, 1e-4);
  EXPECT_LT(path_err, 1e-4);
  // The wrong size for an image's tiles is refused, not packed.
  EXPECT_THROW(tower.encode_images(reference_pixels, {{64, 64}, sizes[1]}), Error);
}

TEST(LlavaNext, LogitsAndGreedyMatchTransformers) {
  const boost::json::value ref = reference();
  const test::NpyArray expected = test::read_npy(dir() + "/logits.npy");
  launcher::SessionOptions options;
  options.model_path = dir();
  launcher::ModelSession session(options);
  const ImagePrompt prompt = launcher::image_prompt(options, session, ids_at(ref, "prompt_ids"),
                                                    {dir() + "/wide.png", dir() + "/tall.png"});
  EXPECT_EQ(prompt.ids, ids_at(ref, "ids"));  // <image> expanded to LlavaNextProcessor's count per image
  session.prepare(512);
  const Tensor logits = session.generator().score(prompt.ids, &prompt.splice);
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
  std::printf("llava_next: %lld positions, max relative error %.3g\n", static_cast<long long>(expected.shape[0]), err);
  EXPECT_LT(err, 1e-4);

  GenerationRequest r;
  r.prompt = prompt.ids;
  r.max_new_tokens = 8;
  const auto out = session.generator().generate({r}, {}, &prompt.splice);
  EXPECT_EQ(out[0].tokens, ids_at(ref, "greedy"));
}

TEST(LlavaNext, ConfigErrorsNameTheField) {
  boost::json::value good = boost::json::parse(read_text(dir() + "/config.json"));
  auto refused = [](boost::json::value v, const char* field) {
    try {
      parse_llava_config(boost::json::serialize(v), "config.json");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "accepted a config with a bad " << field;
  };
  boost::json::value full = good;
  full.as_object()["vision_feature_select_strategy"] = "full";
  refused(full, "vision_feature_select_strategy");
  boost::json::value odd = good;
  odd.as_object()["image_grid_pinpoints"] = boost::json::parse("[[32, 48]]");
  refused(odd, "image_grid_pinpoints");
  boost::json::value flat = good;
  flat.as_object()["image_grid_pinpoints"] = boost::json::parse("[32, 64]");
  refused(flat, "image_grid_pinpoints");
  boost::json::value huge = good;  // 9 x 9 = 81 tiles of 32 pixels: more than kMaxPinpointTiles
  huge.as_object()["image_grid_pinpoints"] = boost::json::parse("[[32, 64], [288, 288]]");
  refused(huge, "[288, 288]");

  // The processor's pinpoints must cut into its tiles too.
  boost::json::value processor = boost::json::parse(read_text(dir() + "/preprocessor_config.json"));
  processor.as_object()["image_grid_pinpoints"] = boost::json::parse("[[32, 64], [40, 32]]");
  try {
    vision::parse_image_processor_config(boost::json::serialize(processor), "preprocessor_config.json");
    ADD_FAILURE() << "accepted a 40-pixel pinpoint with 32-pixel tiles";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[40, 32]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata
