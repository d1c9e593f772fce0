// tests/runtime/vision/llava_vision_test.cpp: the LLaVA vision side (CLIP tower + projector) on the CPU
// backend against transformers' LlavaForConditionalGeneration.get_image_features for tiny random models
// (tools/reference/make_vision_fixtures.py): llava_t5 as transformers 5 saves it (f32; layer -2, "default"
// select, QuickGELU, GELU projector), llava_t4 with transformers 4 names (bf16; last layer, "full" select,
// GELU tower, tanh-GELU projector). The whole path from the image file: decode, preprocess, encode.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "runtime/error.h"
#include "runtime/formats/safetensors.h"
#include "runtime/models/llava_vision.h"
#include "runtime/models/model_description.h"
#include "runtime/vision/preprocess.h"
#include "test_util.h"

namespace strata {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// max |a - b| / (max |b| over the tensor): the relative error of the whole feature matrix.
double relative_error(const Tensor& got, const test::NpyArray& ref) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < ref.data.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(got.data<float>()[i]) - ref.data[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(ref.data[i])));
  }
  return worst / scale;
}

Tensor features_of(const std::string& dir, Backend& backend) {
  const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir + "/config.json");
  const vision::ImageProcessorConfig processor = vision::load_image_processor_config(dir);
  const Tensor px = vision::preprocess_image(vision::read_image_file(dir + "/image.png"), processor);
  LlavaVision tower(config, backend, dir);
  return tower.encode({px});
}

class LlavaVisionReference : public ::testing::TestWithParam<std::string> {};

TEST_P(LlavaVisionReference, ImageFeaturesMatchTransformers) {
  const std::string dir = test::fixture("vision/" + GetParam());
  auto backend = make_cpu_backend();
  const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir + "/config.json");
  const test::NpyArray ref = test::read_npy(dir + "/image_features.npy");
  ASSERT_EQ(ref.shape, (std::vector<int64_t>{config.features_per_image(), config.text_hidden}));

  // From transformers' own pixel values: the model alone.
  const test::NpyArray px_ref = test::read_npy(dir + "/pixel_values.npy");
  Tensor px = Tensor::empty({3, 32, 32}, DType::kF32);
  ASSERT_EQ(px_ref.data.size(), static_cast<size_t>(px.numel()));
  std::copy(px_ref.data.begin(), px_ref.data.end(), px.data<float>());
  LlavaVision tower(config, *backend, dir);
  const Tensor from_reference_pixels = tower.encode({px});
  const double model_err = relative_error(from_reference_pixels, ref);
  std::printf("%s: %lld features, relative error %.3g (transformers' pixel values)\n", GetParam().c_str(),
              static_cast<long long>(ref.shape[0]), model_err);
  EXPECT_LT(model_err, 1e-4);

  // From the image file through strata's decode and preprocessing: the whole path.
  const Tensor from_file = features_of(dir, *backend);
  const double path_err = relative_error(from_file, ref);
  std::printf("%s: relative error %.3g (strata's decode + preprocessing)\n", GetParam().c_str(), path_err);
  EXPECT_LT(path_err, 1e-4);

  // Two images in one batch give each image's features, in order.
  const Tensor batch = tower.encode({px, px});
  ASSERT_EQ(batch.dim(0), 2 * ref.shape[0]);
  const int64_t n = from_reference_pixels.numel();
  for (int64_t i = 0; i < n; i += 5) {
    EXPECT_NEAR(batch.data<float>()[i], from_reference_pixels.data<float>()[i], 1e-5);
    EXPECT_NEAR(batch.data<float>()[n + i], from_reference_pixels.data<float>()[i], 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, LlavaVisionReference, ::testing::Values("llava_t5", "llava_t4"));

TEST(LlavaVision, ConfigChoicesReachTheModel) {
  const std::string t5 = test::fixture("vision/llava_t5/config.json");
  const LlavaConfig a = parse_llava_config(read_text(t5), t5);
  EXPECT_EQ(a.feature_layer, 1);  // -2 of 3 hidden states
  EXPECT_EQ(a.select, FeatureSelect::kDefault);
  EXPECT_EQ(a.features_per_image(), 16);
  EXPECT_EQ(a.vision.act, Activation::kQuickGelu);
  EXPECT_EQ(a.image_token_id, 159);
  const std::string t4 = test::fixture("vision/llava_t4/config.json");
  const LlavaConfig b = parse_llava_config(read_text(t4), t4);
  EXPECT_EQ(b.feature_layer, 2);
  EXPECT_EQ(b.select, FeatureSelect::kFull);
  EXPECT_EQ(b.features_per_image(), 17);
  EXPECT_EQ(b.projector_act, Activation::kGeluTanh);
}

TEST(LlavaVision, ModelPrefixedNamesLoadToo) {
  // The "model."-prefixed layout (transformers 4.52+ re-saves, transformers 5 in memory): the same
  // tensors renamed must give the same features.
  const std::string src = test::fixture("vision/llava_t4");
  const std::string dir = test::temp_dir("llava_model_prefixed");
  const auto header_bytes = read_text(src + "/model.safetensors");
  const SafetensorsHeader header = parse_safetensors_header(reinterpret_cast<const uint8_t*>(header_bytes.data()),
                                                            header_bytes.size(), src);
  std::vector<std::pair<std::string, Tensor>> renamed;
  for (const SafetensorsTensor& t : header.tensors) {
    Tensor copy = Tensor::empty(t.shape, t.dtype);
    std::memcpy(copy.raw(), header_bytes.data() + t.offset, t.nbytes);
    const bool vision = t.name.rfind("vision_tower.", 0) == 0 || t.name.rfind("multi_modal_projector.", 0) == 0;
    renamed.emplace_back(vision ? "model." + t.name : t.name, copy);
  }
  write_safetensors(dir + "/model.safetensors", renamed);
  for (const char* f : {"config.json", "preprocessor_config.json", "image.png"})
    std::filesystem::copy_file(src + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
  auto backend = make_cpu_backend();
  const Tensor got = features_of(dir, *backend);
  EXPECT_LT(relative_error(got, test::read_npy(src + "/image_features.npy")), 1e-4);
}

// The model description's clip_vision and llava_projector tables against what transformers wrote: every
// slot of every layer is in the file with the table's shape, and every vision tensor of the file is a slot
// (bar the tower's final LayerNorm, which LLaVA never reads).
TEST(LlavaVision, DescriptionTablesMatchTheCheckpoints) {
  for (const std::string name : {"llava_t5", "llava_t4"}) {
    const std::string dir = test::fixture("vision/" + name);
    const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir);
    const ModelConfig sizes = config.description_sizes();
    const std::string bytes = read_text(dir + "/model.safetensors");
    const SafetensorsHeader header =
        parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), dir);
    std::map<std::string, Shape> in_file;
    for (const SafetensorsTensor& t : header.tensors) in_file[t.name] = t.shape;
    const std::string tower = name == "llava_t4" ? "vision_tower.vision_model." : "vision_tower.";
    std::set<std::string> expected;
    for (const auto& [desc, prefix] : {std::pair<const char*, std::string>{"clip_vision", tower},
                                       {"llava_projector", "multi_modal_projector."}}) {
      const ModelDescription& d = model_description(desc);
      for (const TensorSlot& slot : d.slots)
        for (int64_t l = 0; l < (slot.per_layer ? config.vision.n_layers : 1); ++l) {
          const std::string hf =
              slot.per_layer ? cat(prefix, d.hf_layer_prefix, l, ".", slot.hf_name) : cat(prefix, slot.hf_name);
          expected.insert(hf);
          ASSERT_TRUE(in_file.count(hf)) << name << ": " << hf;
          EXPECT_EQ(in_file[hf], slot.full_shape(sizes)) << name << ": " << hf;
        }
    }
    for (const auto& [file_name, shape] : in_file) {
      const bool vision = file_name.rfind(tower, 0) == 0 || file_name.rfind("multi_modal_projector.", 0) == 0;
      if (vision && file_name.find("post_layernorm") == std::string::npos) {
        EXPECT_TRUE(expected.count(file_name)) << name << ": " << file_name << " has no slot";
      }
    }
  }
}

TEST(LlavaVision, WrongShapesAndMissingTensorsAreNamed) {
  const std::string src = test::fixture("vision/llava_t5");
  const LlavaConfig good = parse_llava_config(read_text(src + "/config.json"), src);
  auto backend = make_cpu_backend();
  LlavaConfig wider = good;
  wider.vision.ffn = 48;  // fc1 is [64, 32] in the file
  try {
    load_llava_vision_weights(src, wider, *backend);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vision_tower.encoder.layers.0.mlp.fc1.weight"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("[48, 32]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_llava_vision_weights(test::fixture("hf/llama_mha"), good, *backend), Error);
}

// Tensor parallelism of the tower: equal shares of the heads and MLP columns where TP divides both, the whole
// tower otherwise; the loader reads a rank's slices of the description's kRows/kCols slots (row ranges of
// q/k/v and fc1, column ranges of the out-projection and fc2) and the rest whole.
TEST(LlavaVision, TensorParallelShardsAndTheirFallback) {
  const std::string dir = test::fixture("vision/llava_t5");
  const LlavaConfig config = parse_llava_config(read_text(dir + "/config.json"), dir);  // 4 heads of 8, ffn 64
  const VisionShard s = make_vision_shard(config, 1, 2);
  EXPECT_TRUE(s.split);
  EXPECT_EQ(s.head_begin, 2);
  EXPECT_EQ(s.heads, 2);
  EXPECT_EQ(s.ffn_begin, 32);
  EXPECT_EQ(s.ffn_count, 32);
  EXPECT_FALSE(make_vision_shard(config, 0, 3).split);  // 4 heads over 3 ranks: replicated
  EXPECT_FALSE(make_vision_shard(config, 0, 1).split);
  EXPECT_THROW(make_vision_shard(config, 2, 2), Error);

  auto backend = make_cpu_backend();
  const LlavaVisionWeights full = load_llava_vision_weights(dir, config, *backend);
  const LlavaVisionWeights half = load_llava_vision_weights(dir, config, *backend, s);
  for (size_t l = 0; l < full.layers.size(); ++l) {
    const ClipLayerWeights& f = full.layers[l];
    const ClipLayerWeights& h = half.layers[l];
    auto expect_rows = [&](const Tensor& part, const Tensor& whole, int64_t begin, const char* what) {
      const int64_t width = whole.rank() == 2 ? whole.dim(1) : 1;
      ASSERT_EQ(part.dim(0) * width, part.numel()) << what;
      for (int64_t i = 0; i < part.numel(); ++i)
        ASSERT_EQ(part.data<float>()[i], whole.data<float>()[begin * width + i]) << what << " layer " << l;
    };
    auto expect_cols = [&](const Tensor& part, const Tensor& whole, int64_t begin, const char* what) {
      ASSERT_EQ(part.dim(0), whole.dim(0)) << what;
      for (int64_t r = 0; r < part.dim(0); ++r)
        for (int64_t c = 0; c < part.dim(1); ++c)
          ASSERT_EQ(part.data<float>()[r * part.dim(1) + c], whole.data<float>()[r * whole.dim(1) + begin + c])
              << what << " layer " << l;
    };
    EXPECT_EQ(h.wq.shape(), Shape({16, 32}));
    expect_rows(h.wq, f.wq, 16, "q_proj");
    expect_rows(h.bk, f.bk, 16, "k_proj bias");
    expect_rows(h.wv, f.wv, 16, "v_proj");
    EXPECT_EQ(h.wo.shape(), Shape({32, 16}));
    expect_cols(h.wo, f.wo, 16, "out_proj");
    expect_rows(h.fc1_w, f.fc1_w, 32, "fc1");
    expect_rows(h.fc1_b, f.fc1_b, 32, "fc1 bias");
    EXPECT_EQ(h.fc2_w.shape(), Shape({32, 32}));
    expect_cols(h.fc2_w, f.fc2_w, 32, "fc2");
    EXPECT_EQ(h.bo.shape(), f.bo.shape());  // row-parallel biases stay whole (added once)
    EXPECT_EQ(h.fc2_b.shape(), f.fc2_b.shape());
  }
}

}  // namespace
}  // namespace strata
