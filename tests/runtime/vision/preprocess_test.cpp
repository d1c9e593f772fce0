// tests/runtime/vision/preprocess_test.cpp: strata's image preprocessing against transformers' own image
// processors (CLIPImageProcessorPil, LlavaImageProcessorPil; fixtures from
// tools/reference/make_vision_fixtures.py) on the same files: pixel_values of every image under a CLIP
// config (shortest-edge bicubic, center crop), LLaVA's pad-to-square with a non-square crop, and a fixed
// bilinear resize without crop. The bound is stated before normalization, in 8-bit levels: one level,
// for rounding that may differ between Pillow versions.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/vision/preprocess.h"
#include "test_util.h"

namespace strata::vision {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const char* const kProcessors[] = {"clip32", "llava_pad", "fixed_bilinear"};
const char* const kImages[] = {"orient6.jpg", "alpha.png", "palette.png", "gray.png",
                               "large.png",   "photo.webp", "alpha.webp"};

TEST(Preprocess, PixelValuesMatchTransformers) {
  double worst_levels = 0;
  for (const char* pname : kProcessors) {
    const std::string cfg_path = test::fixture(std::string("vision/processors/") + pname + ".json");
    const ImageProcessorConfig config = parse_image_processor_config(read_text(cfg_path), cfg_path);
    for (const char* iname : kImages) {
      const RgbImage image = read_image_file(test::fixture(std::string("vision/images/") + iname));
      const Tensor px = preprocess_image(image, config);
      const test::NpyArray ref =
          test::read_npy(test::fixture(std::string("vision/pixel_values/") + pname + "__" + iname + ".npy"));
      ASSERT_EQ(ref.shape, px.shape()) << pname << " " << iname;
      const int64_t plane = px.dim(1) * px.dim(2);
      double worst = 0;
      for (int64_t i = 0; i < px.numel(); ++i) {
        // Back to 8-bit levels: the difference times the channel's std, times 255.
        const double levels = std::fabs(px.data<float>()[i] - ref.data[static_cast<size_t>(i)]) *
                              config.image_std[static_cast<size_t>(i / plane)] * 255.0;
        worst = std::max(worst, levels);
      }
      std::printf("%-15s %-12s [3, %lld, %lld] max difference %.4f/255\n", pname, iname,
                  static_cast<long long>(px.dim(1)), static_cast<long long>(px.dim(2)), worst);
      EXPECT_LE(worst, 1.0 + 1e-3) << pname << " " << iname;  // measured: 0 everywhere (Pillow 13)
      worst_levels = std::max(worst_levels, worst);
    }
  }
  std::printf("worst over all: %.4f/255\n", worst_levels);
}

TEST(Preprocess, ReadsTransformers5ProcessorConfig) {
  // transformers 5 keeps the image processor inside processor_config.json.
  const std::string dir = test::temp_dir("vision_processor_config");
  std::remove((dir + "/preprocessor_config.json").c_str());
  const std::string inner = read_text(test::fixture("vision/processors/llava_pad.json"));
  std::ofstream(dir + "/processor_config.json") << "{\"image_processor\": " << inner << ", \"patch_size\": 14}";
  const ImageProcessorConfig c = load_image_processor_config(dir);
  EXPECT_TRUE(c.do_pad);
  EXPECT_EQ(c.shortest_edge, 24);
  EXPECT_EQ(c.crop_height, 24);
  EXPECT_EQ(c.crop_width, 20);
  // preprocessor_config.json wins where both exist.
  std::ofstream(dir + "/preprocessor_config.json") << read_text(test::fixture("vision/processors/clip32.json"));
  EXPECT_FALSE(load_image_processor_config(dir).do_pad);
}

TEST(Preprocess, BadConfigsNameTheFieldAndFile) {
  try {
    parse_image_processor_config(R"({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
                                     "image_mean": [0.5, 0.5]})",
                                 "cfg.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("image_mean"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_image_processor_config(R"({"size": {"shortest_edge": 8}, "do_center_crop": false,
                                               "resample": 0})", "cfg.json"),
               Error);
  EXPECT_THROW(load_image_processor_config(test::temp_dir("vision_no_processor")), Error);
}

}  // namespace
}  // namespace strata::vision
