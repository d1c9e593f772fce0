// tests/runtime/vision/llava_mmproj_test.cpp: LLaVA from llama.cpp's GGUF pair (tests/fixtures/vision/llava_gguf:
// llava_t5's tiny model through llama.cpp's convert_hf_to_gguf.py and its legacy mmproj converter, made by
// tools/reference/make_mmproj_fixtures.py): every position's logits against transformers' on the same weights,
// the mmproj's metadata against the transformers config it came from, and the bad files users meet.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fstream>
#include <functional>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/models/llava_mmproj.h"
#include "runtime/models/llava_vision.h"
#include "tests/runtime/vision/mmproj_pair.h"
#include "test_util.h"

namespace strata {
namespace {

std::string pair_dir() { return test::fixture("vision/llava_gguf"); }
std::string hf_dir() { return test::fixture("vision/llava_t5"); }
std::string mmproj() { return pair_dir() + "/mmproj.gguf"; }
std::string text_gguf() { return pair_dir() + "/text.gguf"; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<int32_t> ids_of(const char* key) {
  const boost::json::value v = boost::json::parse(read_text(hf_dir() + "/ids.json"));
  std::vector<int32_t> ids;
  for (const auto& x : v.at(key).as_array()) ids.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
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

using test::Metadata;
using test::set_key;
using test::Tensors;
// A copy of the fixture's mmproj with its metadata and tensor list edited.
std::string edited_mmproj(const std::string& name, const std::function<void(Metadata&, Tensors&)>& edit) {
  return test::edited_mmproj(mmproj(), "llava_mmproj_test", name, edit);
}

TEST(LlavaMmproj, PairGivesTransformersLogitsAtEveryPosition) {
  const test::NpyArray expected = test::read_npy(pair_dir() + "/logits.npy");
  const launcher::SessionOptions options = pair_options();
  launcher::ModelSession session(options);
  // The prompt as a user writes it: one <image> token, expanded to one per image feature.
  const ImagePrompt prompt = launcher::image_prompt(options, session, ids_of("prompt_ids"), {hf_dir() + "/image.png"});
  EXPECT_EQ(prompt.ids, ids_of("ids"));
  session.prepare(256);
  const Tensor logits = session.generator().score(prompt.ids, &prompt.splice);
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
  std::printf("GGUF pair: %lld positions, max relative error %.3g\n", static_cast<long long>(expected.shape[0]), err);
  EXPECT_LT(err, 1e-4);  // llava_logits_test's tolerance for the Hugging Face checkpoint
  // The image is what matched: without its features the positions from the first placeholder on differ.
  const Tensor plain = session.generator().score(prompt.ids);
  const int64_t V = logits.dim(1), first = prompt.splice.positions.front();
  EXPECT_GT(test::max_rel_error(plain.data<float>() + first * V, expected.data.data() + first * V, V), 1e-2);
}

TEST(LlavaMmproj, MetadataGivesTheTransformersConfig) {
  const LlavaConfig hf = parse_llava_config(read_text(hf_dir() + "/config.json"), hf_dir());
  const LlavaConfig c = read_mmproj_config(mmproj(), 32, 159, text_gguf());
  EXPECT_EQ(c.vision.hidden, hf.vision.hidden);
  EXPECT_EQ(c.vision.ffn, hf.vision.ffn);
  EXPECT_EQ(c.vision.n_heads, hf.vision.n_heads);
  EXPECT_EQ(c.vision.image_size, hf.vision.image_size);
  EXPECT_EQ(c.vision.patch_size, hf.vision.patch_size);
  EXPECT_FLOAT_EQ(c.vision.layer_norm_eps, hf.vision.layer_norm_eps);
  EXPECT_EQ(c.vision.act, hf.vision.act);
  EXPECT_EQ(c.vision.n_layers, hf.vision.n_layers - 1);  // the converter drops the layer after the feature layer
  EXPECT_EQ(c.feature_layer, hf.feature_layer);
  EXPECT_EQ(c.select, hf.select);
  EXPECT_EQ(c.projector_act, hf.projector_act);
  EXPECT_EQ(c.projector_bias, hf.projector_bias);
  EXPECT_EQ(c.features_per_image(), hf.features_per_image());

  const vision::ImageProcessorConfig p = mmproj_image_processor(mmproj());
  const vision::ImageProcessorConfig want = vision::load_image_processor_config(hf_dir());
  EXPECT_EQ(p.shortest_edge, want.shortest_edge);
  EXPECT_EQ(p.crop_height, want.crop_height);
  EXPECT_EQ(p.crop_width, want.crop_width);
  EXPECT_EQ(p.resample, want.resample);
  EXPECT_EQ(p.do_pad, want.do_pad);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FLOAT_EQ(p.image_mean[i], want.image_mean[i]);
    EXPECT_FLOAT_EQ(p.image_std[i], want.image_std[i]);
  }

  // The image token comes from the text GGUF's vocabulary ("<image>", id 159 as in config.json).
  launcher::ModelSession session(pair_options());
  EXPECT_EQ(launcher::image_token_of(&session.tokenizer(), text_gguf()), hf.image_token_id);
  const std::optional<launcher::VisionModel> model = launcher::vision_model_of(pair_options(), session);
  ASSERT_TRUE(model.has_value());
  EXPECT_EQ(model->config.image_token_id, hf.image_token_id);
  EXPECT_EQ(model->weights, mmproj());
}

TEST(LlavaMmproj, FfnNamesOfEitherConverterGiveTheSameFeatures) {
  // The legacy converter names fc1 "ffn_down"; the names transformers' layout implies put fc1 at "ffn_up".
  const std::string renamed = edited_mmproj("renamed_ffn", [](Metadata&, Tensors& tensors) {
    for (auto& [name, t] : tensors) {
      if (name.find(".ffn_down.") != std::string::npos)
        name.replace(name.find(".ffn_down."), 10, ".ffn_up.");
      else if (name.find(".ffn_up.") != std::string::npos)
        name.replace(name.find(".ffn_up."), 8, ".ffn_down.");
    }
  });
  const LlavaConfig c = read_mmproj_config(mmproj(), 32, 159, text_gguf());
  const std::unique_ptr<Backend> backend = make_cpu_backend();
  const Tensor pixels = vision::preprocess_image(vision::read_image_file(hf_dir() + "/image.png"),
                                                 mmproj_image_processor(mmproj()));
  LlavaVision legacy(c, *backend, mmproj());
  LlavaVision modern(c, *backend, renamed);
  const Tensor a = legacy.encode({pixels}), b = modern.encode({pixels});  // host tensors on the CPU backend
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(test::max_rel_error(a.data<float>(), b.data<float>(), static_cast<size_t>(a.numel())), 0.0);
  // And both are near transformers' image features of llava_t5, whose patch embedding and projector the mmproj
  // holds rounded to f16 (the rounding moves them by about 1e-3).
  const test::NpyArray want = test::read_npy(hf_dir() + "/image_features.npy");
  ASSERT_EQ(static_cast<size_t>(a.numel()), want.data.size());
  EXPECT_LT(test::max_rel_error(a.data<float>(), want.data.data(), want.data.size()), 5e-3);
}

TEST(LlavaMmproj, BadFilesNameTheFileTheKeyAndWhatIsSupported) {
  const std::string ldp = edited_mmproj("ldp", [](Metadata& m, Tensors&) {
    set_key(m, "clip.projector_type", GgufValue::str("ldp"));
  });
  std::string msg = error_of([&] { read_mmproj_config(ldp, 32, 159, text_gguf()); });
  EXPECT_NE(msg.find(ldp), std::string::npos) << msg;
  EXPECT_NE(msg.find("clip.projector_type is 'ldp'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("('mlp')"), std::string::npos) << msg;

  const std::string no_q = edited_mmproj("no_q", [](Metadata&, Tensors& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "v.blk.0.attn_q.weight"; });
  });
  const LlavaConfig c = read_mmproj_config(no_q, 32, 159, text_gguf());
  const std::unique_ptr<Backend> backend = make_cpu_backend();
  msg = error_of([&] { load_mmproj_vision_weights(no_q, c, *backend); });
  EXPECT_NE(msg.find(no_q), std::string::npos) << msg;
  EXPECT_NE(msg.find("tensor 'v.blk.0.attn_q.weight' is missing"), std::string::npos) << msg;

  // A text model of another width: the projector's output cannot be its embeddings.
  msg = error_of([&] { read_mmproj_config(mmproj(), 48, 159, "other.gguf"); });
  EXPECT_NE(msg.find(mmproj()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'mm.2.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("other.gguf has embedding width 48"), std::string::npos) << msg;
  // ... and the same through the session, with a tower whose projector is narrower than the text model.
  const std::string narrow = edited_mmproj("narrow", [](Metadata&, Tensors& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "mm.2.weight") t = t.rows(0, 16);
  });
  launcher::SessionOptions options = pair_options();
  options.mmproj_path = narrow;
  launcher::ModelSession session(options);
  msg = error_of([&] { launcher::vision_model_of(options, session); });
  EXPECT_NE(msg.find(narrow), std::string::npos) << msg;
  EXPECT_NE(msg.find("projector outputs 16-wide embeddings"), std::string::npos) << msg;
  EXPECT_NE(msg.find(text_gguf() + " has embedding width 32"), std::string::npos) << msg;

  // The text GGUF given as the mmproj; several feature layers; a LLaVA directory with --mmproj.
  msg = error_of([&] { read_mmproj_config(text_gguf(), 32, 159, text_gguf()); });
  EXPECT_NE(msg.find("general.architecture is 'llama', not 'clip'"), std::string::npos) << msg;
  const std::string two_layers = edited_mmproj("two_layers", [](Metadata& m, Tensors&) {
    set_key(m, "clip.vision.feature_layer", GgufValue::i32_array({0, 1}));
  });
  msg = error_of([&] { read_mmproj_config(two_layers, 32, 159, text_gguf()); });
  EXPECT_NE(msg.find("clip.vision.feature_layer lists 2 layers"), std::string::npos) << msg;
  launcher::SessionOptions dir_options = pair_options();
  dir_options.model_path = hf_dir();
  msg = error_of([&] { launcher::vision_model_of(dir_options, session); });
  EXPECT_NE(msg.find("LLaVA directory with its own vision tower"), std::string::npos) << msg;
  msg = error_of([&] { launcher::image_token_of(nullptr, "plain.gguf"); });
  EXPECT_NE(msg.find("plain.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'<image>'"), std::string::npos) << msg;
}

TEST(LlavaMmproj, ExplicitFeatureLayerSelectsThatHiddenState) {
  // clip.vision.feature_layer 0: the embeddings after the pre-LayerNorm, with no encoder layer run.
  const std::string layer0 = edited_mmproj("layer0", [](Metadata& m, Tensors&) {
    set_key(m, "clip.vision.feature_layer", GgufValue::i32_array({0}));
  });
  const LlavaConfig c = read_mmproj_config(layer0, 32, 159, text_gguf());
  EXPECT_EQ(c.feature_layer, 0);
  const std::unique_ptr<Backend> backend = make_cpu_backend();
  const LlavaVisionWeights w = load_mmproj_vision_weights(layer0, c, *backend);
  EXPECT_TRUE(w.layers.empty());
}

}  // namespace
}  // namespace strata
