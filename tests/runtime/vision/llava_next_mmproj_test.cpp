// tests/runtime/vision/llava_next_mmproj_test.cpp: LLaVA-NeXT from llama.cpp's GGUF pair
// (tests/fixtures/vision/llava_next_gguf, made by tools/reference/make_mmproj_next_fixtures.py: a tiny random
// LlavaNextForConditionalGeneration through llama.cpp's llava_surgery_v2.py, its legacy mmproj converter and
// convert_hf_to_gguf.py). The mmproj's tiling keys become the LlavaConfig transformers' config gives, and the
// pair's logits at every position and greedy continuation match transformers' on the same weights for two images
// whose best pinpoints give different tile grids (1x2 and 2x2). Malformed or missing tiling keys are named.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/models/llava_mmproj.h"
#include "runtime/models/llava_vision.h"
#include "runtime/models/model_description.h"
#include "runtime/vision/preprocess.h"
#include "tests/runtime/vision/mmproj_pair.h"
#include "test_util.h"

namespace strata {
namespace {

constexpr int32_t kImageToken = 159;
std::string pair_dir() { return test::fixture("vision/llava_next_gguf"); }
std::string images_dir() { return test::fixture("vision/llava_next"); }  // wide.png, big.png
std::string mmproj() { return pair_dir() + "/mmproj.gguf"; }
std::string text_gguf() { return pair_dir() + "/text.gguf"; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

boost::json::value reference() { return boost::json::parse(read_text(pair_dir() + "/reference.json")); }

std::vector<int32_t> ids_in(const boost::json::value& v) {
  std::vector<int32_t> ids;
  for (const auto& x : v.as_array()) ids.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return ids;
}

launcher::SessionOptions pair_options() { return test::pair_options(text_gguf(), mmproj()); }

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

using test::drop_key;
using test::Metadata;
using test::set_key;
using test::Tensors;
// A copy of the fixture's mmproj with its metadata and tensor list edited.
std::string edited_mmproj(const std::string& name, const std::function<void(Metadata&, Tensors&)>& edit) {
  return test::edited_mmproj(mmproj(), "llava_next_mmproj_test", name, edit);
}

TEST(LlavaNextMmproj, MetadataGivesTheTransformersConfig) {
  const LlavaConfig hf = parse_llava_config(read_text(pair_dir() + "/config.json"), pair_dir());
  const LlavaConfig c = read_mmproj_config(mmproj(), 32, kImageToken, text_gguf());
  ASSERT_TRUE(c.anyres());
  // The file's flattened (width, height) pairs, in transformers' (height, width) order and list order.
  EXPECT_EQ(c.grid_pinpoints, hf.grid_pinpoints);
  EXPECT_EQ(c.feature_layer, hf.feature_layer);
  EXPECT_EQ(c.vision.n_layers, hf.vision.n_layers - 1);  // the converter drops the layer after the feature layer
  EXPECT_EQ(c.select, hf.select);
  for (const char* name : {"wide.png", "big.png", "tall.png"}) {
    const vision::RgbImage image = vision::read_image_file(images_dir() + "/" + name);
    EXPECT_EQ(c.tiles_for(image.height, image.width), hf.tiles_for(image.height, image.width)) << name;
    EXPECT_EQ(c.features_for(image.height, image.width), hf.features_for(image.height, image.width)) << name;
  }
  const ModelConfig sizes = c.description_sizes();
  EXPECT_TRUE(sizes.vision.image_newline);
  EXPECT_FALSE(read_mmproj_config(test::fixture("vision/llava_gguf/mmproj.gguf"), 32, kImageToken, text_gguf())
                   .description_sizes()
                   .vision.image_newline);

  // The image processor: LlavaNextImageProcessor's tiles, as the llava_next fixture's preprocessor_config.json
  // (the same tile size and pinpoints) gives them.
  const vision::ImageProcessorConfig p = mmproj_image_processor(mmproj());
  const vision::ImageProcessorConfig want = vision::load_image_processor_config(images_dir());
  EXPECT_EQ(p.grid_pinpoints, want.grid_pinpoints);
  EXPECT_EQ(p.do_pad, want.do_pad);
  EXPECT_EQ(p.tile_side(), want.tile_side());
  for (const char* name : {"wide.png", "big.png"}) {
    const vision::RgbImage image = vision::read_image_file(images_dir() + "/" + name);
    const Tensor a = vision::preprocess_image(image, p), b = vision::preprocess_image(image, want);
    ASSERT_EQ(a.shape(), b.shape()) << name;
    EXPECT_EQ(test::max_rel_error(a.data<float>(), b.data<float>(), static_cast<size_t>(a.numel())), 0.0) << name;
  }
}

// Every position's logits and the greedy continuation against transformers, for a 50x30 image (best pinpoint
// 32x64: a 1x2 grid of tiles) and a 70x60 one (64x64: 2x2).
TEST(LlavaNextMmproj, PairGivesTransformersLogitsAndGreedyForEachTileGrid) {
  const boost::json::value ref = reference();
  const std::vector<int32_t> prompt_ids = ids_in(ref.at("prompt_ids"));
  const launcher::SessionOptions options = pair_options();
  launcher::ModelSession session(options);
  session.prepare(256);
  std::set<int64_t> tile_counts;
  for (const char* name : {"wide.png", "big.png"}) {
    const boost::json::value& want = ref.at("images").at(name);
    const test::NpyArray expected = test::read_npy(pair_dir() + "/logits__" + name + ".npy");
    const ImagePrompt prompt = launcher::image_prompt(options, session, prompt_ids, {images_dir() + "/" + name});
    EXPECT_EQ(prompt.ids, ids_in(want.at("ids"))) << name;  // <image> expanded to transformers' feature count
    const vision::RgbImage image = vision::read_image_file(images_dir() + "/" + name);
    const LlavaConfig c = read_mmproj_config(mmproj(), 32, kImageToken, text_gguf());
    EXPECT_EQ(c.tiles_for(image.height, image.width), want.at("tiles").to_number<int64_t>()) << name;
    tile_counts.insert(c.tiles_for(image.height, image.width));

    const Tensor logits = session.generator().score(prompt.ids, &prompt.splice);
    ASSERT_EQ(logits.dim(0), expected.shape[0]) << name;
    ASSERT_EQ(logits.dim(1), expected.shape[1]) << name;
    const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
    std::printf("LLaVA-NeXT GGUF pair, %s: %lld positions, max relative error %.3g\n", name,
                static_cast<long long>(expected.shape[0]), err);
    EXPECT_LT(err, 1e-4) << name;
    // The image is what matched: without its features the positions from the first placeholder on differ.
    const Tensor plain = session.generator().score(prompt.ids);
    const int64_t V = logits.dim(1), first = prompt.splice.positions.front();
    EXPECT_GT(test::max_rel_error(plain.data<float>() + first * V, expected.data.data() + first * V, V), 1e-2);

    GenerationRequest r;
    r.prompt = prompt.ids;
    r.max_new_tokens = 8;
    const auto out = session.generator().generate({r}, {}, &prompt.splice);
    EXPECT_EQ(out[0].tokens, ids_in(want.at("greedy"))) << name;
  }
  EXPECT_EQ(tile_counts.size(), 2u);  // two different grids
}

TEST(LlavaNextMmproj, EitherImageNewlineNameGivesTheSameFeatures) {
  // The legacy converter writes "model.image_newline"; llama.cpp's loader (and the description) say "v.image_newline".
  const std::string renamed = edited_mmproj("v_newline", [](Metadata&, Tensors& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "model.image_newline") name = "v.image_newline";
  });
  const LlavaConfig c = read_mmproj_config(mmproj(), 32, kImageToken, text_gguf());
  const std::unique_ptr<Backend> backend = make_cpu_backend();
  const vision::RgbImage image = vision::read_image_file(images_dir() + "/wide.png");
  const Tensor pixels = vision::preprocess_image(image, mmproj_image_processor(mmproj()));
  LlavaVision legacy(c, *backend, mmproj());
  LlavaVision modern(c, *backend, renamed);
  const Tensor a = legacy.encode_images({pixels}, {{image.height, image.width}});
  const Tensor b = modern.encode_images({pixels}, {{image.height, image.width}});
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(a.dim(0), c.features_for(image.height, image.width));
  EXPECT_EQ(test::max_rel_error(a.data<float>(), b.data<float>(), static_cast<size_t>(a.numel())), 0.0);
}

TEST(LlavaNextMmproj, BadTilingKeysNameTheKey) {
  const std::string pins = "clip.vision.image_grid_pinpoints";
  // Pinpoints missing from a file that says it tiles: named, for the config and the image processor alike.
  const std::string no_pins = edited_mmproj("no_pins", [&](Metadata& m, Tensors&) { drop_key(m, pins); });
  std::string msg = error_of([&] { read_mmproj_config(no_pins, 32, kImageToken, text_gguf()); });
  EXPECT_NE(msg.find(no_pins), std::string::npos) << msg;
  EXPECT_NE(msg.find("metadata '" + pins + "' is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mm_patch_merge_type is 'spatial_unpad'"), std::string::npos) << msg;
  msg = error_of([&] { mmproj_image_processor(no_pins); });
  EXPECT_NE(msg.find("metadata '" + pins + "' is missing"), std::string::npos) << msg;
  const std::string only_aspect = edited_mmproj("only_aspect", [&](Metadata& m, Tensors&) {
    drop_key(m, pins);
    drop_key(m, "clip.vision.mm_patch_merge_type");
  });
  msg = error_of([&] { read_mmproj_config(only_aspect, 32, kImageToken, text_gguf()); });
  EXPECT_NE(msg.find("image_aspect_ratio is 'anyres'"), std::string::npos) << msg;

  // Malformed pinpoints: an odd count, a size that is not whole tiles, floats.
  const auto refused = [&](const std::string& name, GgufValue value, const std::string& says) {
    const std::string path = edited_mmproj(name, [&](Metadata& m, Tensors&) { set_key(m, pins, value); });
    const std::string got = error_of([&] { read_mmproj_config(path, 32, kImageToken, text_gguf()); });
    EXPECT_NE(got.find(path), std::string::npos) << got;
    EXPECT_NE(got.find(pins), std::string::npos) << got;
    EXPECT_NE(got.find(says), std::string::npos) << got;
  };
  refused("odd", GgufValue::i32_array({64, 32, 32}), "holds 3 values");
  refused("empty", GgufValue::i32_array({}), "holds 0 values");
  refused("not_tiles", GgufValue::i32_array({64, 32, 48, 64}), "entry 1 (width 48, height 64)");
  refused("negative", GgufValue::i32_array({-32, 32}), "entry 0 (width -32, height 32)");
  // 65 tiles of 32 pixels (2080 = 65 x 32) in one pinpoint: past the bound, not an allocation of millions.
  refused("too_many_tiles", GgufValue::i32_array({64, 32, 2080, 32}), "entry 1 (width 2080, height 32)");
  refused("floats", GgufValue::f32_array({64, 32}), "must be an array of");

  // A packing strata does not do: llama.cpp's "flat" merge (no unpad, no newlines).
  const std::string flat = edited_mmproj("flat", [](Metadata& m, Tensors&) {
    set_key(m, "clip.vision.mm_patch_merge_type", GgufValue::str("flat"));
  });
  msg = error_of([&] { read_mmproj_config(flat, 32, kImageToken, text_gguf()); });
  EXPECT_NE(msg.find("clip.vision.mm_patch_merge_type is 'flat'"), std::string::npos) << msg;

  // LLaVA-OneVision's "anyres_max_9" also downsamples large grids: not LLaVA-NeXT's tiling.
  const std::string onevision = edited_mmproj("onevision", [](Metadata& m, Tensors&) {
    set_key(m, "clip.vision.image_aspect_ratio", GgufValue::str("anyres_max_9"));
  });
  msg = error_of([&] { read_mmproj_config(onevision, 32, kImageToken, text_gguf()); });
  EXPECT_NE(msg.find("clip.vision.image_aspect_ratio is 'anyres_max_9'"), std::string::npos) << msg;

  // Tiling keys but no image_newline tensor.
  const std::string no_newline = edited_mmproj("no_newline", [](Metadata&, Tensors& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "model.image_newline"; });
  });
  const LlavaConfig c = read_mmproj_config(no_newline, 32, kImageToken, text_gguf());
  const std::unique_ptr<Backend> backend = make_cpu_backend();
  msg = error_of([&] { load_mmproj_vision_weights(no_newline, c, *backend); });
  EXPECT_NE(msg.find(no_newline), std::string::npos) << msg;
  EXPECT_NE(msg.find("tensor 'v.image_newline' is missing"), std::string::npos) << msg;
}

// The model description's llava_next slot against both files: transformers' checkpoint ("image_newline") and the
// legacy converter's mmproj ("model.image_newline"), with the slot's shape [text hidden].
TEST(LlavaNextMmproj, NewlineSlotMatchesBothFiles) {
  const ModelDescription& next = model_description("llava_next");
  ASSERT_EQ(next.slots.size(), 1u);
  const TensorSlot& slot = next.slots.front();
  const LlavaConfig c = read_mmproj_config(mmproj(), 32, kImageToken, text_gguf());
  const Shape want = slot.full_shape(c.description_sizes());
  EXPECT_EQ(want, Shape({32}));
  auto file = std::make_shared<MappedFile>(mmproj());
  const GgufFile gguf = parse_gguf_buffer(file->data(), file->size(), mmproj());
  bool found = false;
  for (const GgufTensorInfo& t : gguf.tensors)
    if (t.name == "model.image_newline") {
      found = true;
      EXPECT_EQ(t.shape, want);
    }
  EXPECT_TRUE(found);
  const std::string hf = images_dir() + "/model.safetensors";
  auto hf_file = std::make_shared<MappedFile>(hf);
  bool in_hf = false;
  for (const SafetensorsTensor& t : parse_safetensors_header(hf_file->data(), hf_file->size(), hf).tensors)
    if (t.name == std::string(slot.hf_name)) {
      in_hf = true;
      EXPECT_EQ(t.shape, want);
    }
  EXPECT_TRUE(in_hf);
}

TEST(LlavaNextMmproj, PinpointsAreWidthHeightPairs) {
  // As llama.cpp's loader reads the key: (width 64, height 32) is a wide resolution, transformers' [32, 64].
  const std::string wide = edited_mmproj("wide_only", [](Metadata& m, Tensors&) {
    set_key(m, "clip.vision.image_grid_pinpoints", GgufValue::i32_array({64, 32}));
  });
  const LlavaConfig c = read_mmproj_config(wide, 32, kImageToken, text_gguf());
  ASSERT_EQ(c.grid_pinpoints.size(), 1u);
  EXPECT_EQ(c.grid_pinpoints[0].height, 32);
  EXPECT_EQ(c.grid_pinpoints[0].width, 64);
  EXPECT_EQ(c.tiles_for(30, 50), 3);  // the base tile and a 1x2 grid
}

}  // namespace
}  // namespace strata
