// runtime/models/llava_config.cpp: config.json of LlavaForConditionalGeneration (and LLaVA-NeXT) ->
// LlavaConfig.
#include "runtime/models/llava_config.h"

#include "runtime/error.h"
#include "runtime/vision/anyres.h"
#include "runtime/vision/vision_json.h"

namespace strata {

Activation parse_activation(const std::string& name, const std::string& source) {
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "quick_gelu") return Activation::kQuickGelu;
  STRATA_THROW(ErrorKind::kFormat, source, ": activation '", name,
               "' is not supported (gelu, gelu_new, gelu_pytorch_tanh, quick_gelu are)");
}

ModelConfig LlavaConfig::description_sizes() const {
  ModelConfig c;
  c.hidden = text_hidden;
  c.vision.hidden = vision.hidden;
  c.vision.ffn = vision.ffn;
  c.vision.n_layers = vision.n_layers;
  c.vision.positions = vision.n_positions();
  c.vision.channels = vision.channels;
  c.vision.patch = vision.patch_size;
  c.vision.projector_bias = projector_bias;
  c.vision.image_newline = anyres();
  return c;
}

namespace {
void check_image_size(int64_t height, int64_t width) {
  STRATA_CHECK(height > 0 && width > 0, "LLaVA-NeXT: an image of ", width, "x", height,
               " pixels; the image's size decides its tiles and feature count, so it must be given");
}
}  // namespace

int64_t LlavaConfig::features_for(int64_t height, int64_t width) const {
  if (!anyres()) return features_per_image();
  check_image_size(height, width);
  const vision::Resolution best = vision::select_best_resolution({height, width}, grid_pinpoints);
  const int64_t side = vision.patches_per_side();
  const vision::Resolution grid{best.height / vision.image_size * side, best.width / vision.image_size * side};
  const vision::GridWindow kept = vision::unpadded_window({height, width}, grid);
  return features_per_image() + kept.rows * (kept.cols + 1);
}

int64_t LlavaConfig::tiles_for(int64_t height, int64_t width) const {
  if (!anyres()) return 1;
  check_image_size(height, width);
  const vision::Resolution best = vision::select_best_resolution({height, width}, grid_pinpoints);
  return 1 + (best.height / vision.image_size) * (best.width / vision.image_size);
}

namespace {
void parse_anyres(const vision::JsonFields& f, LlavaConfig& c) {
  const boost::json::value* pins = f.find("image_grid_pinpoints");
  c.grid_pinpoints = pins != nullptr ? vision::parse_grid_pinpoints(*pins, c.vision.image_size, f.source)
                                     : std::vector<vision::Resolution>{{336, 672}, {672, 336}, {672, 672},
                                                                       {1008, 336}, {336, 1008}};  // LlavaNextConfig's
  // The packing reshapes each tile's features into the patch grid, which the class token does not fit.
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.select == FeatureSelect::kDefault, f.source,
                    ": LLaVA-NeXT needs vision_feature_select_strategy 'default' (the tiles' patch grids are "
                    "unpadded and joined; a kept class token has no place in them)");
}
}  // namespace

LlavaConfig parse_llava_config(const std::string& json_text, const std::string& source) {
  using vision::JsonFields;
  const boost::json::value root = vision::parse_json_object(json_text, source);
  const JsonFields f{root.get_object(), source};
  const std::string model_type = f.string("model_type", "");
  STRATA_CHECK_KIND(ErrorKind::kFormat, model_type == "llava" || model_type == "llava_next", source,
                    ": model_type is '", model_type,
                    "', not 'llava' (LlavaForConditionalGeneration) or 'llava_next' (LlavaNextForConditionalGeneration)");
  LlavaConfig c;

  const boost::json::value* vc = f.find("vision_config");
  STRATA_CHECK_KIND(ErrorKind::kFormat, vc != nullptr && vc->is_object(), source,
                    ": 'vision_config' is missing; strata does not assume transformers' default tower");
  const std::string vsource = source + " (vision_config)";
  const JsonFields v{vc->get_object(), vsource};
  const std::string vtype = v.string("model_type", "clip_vision_model");
  STRATA_CHECK_KIND(ErrorKind::kFormat, vtype == "clip_vision_model", vsource, ": vision tower '", vtype,
                    "' is not supported yet (CLIP, model_type clip_vision_model, is)");
  ClipVisionConfig& t = c.vision;
  t.hidden = v.integer("hidden_size", t.hidden);
  t.ffn = v.integer("intermediate_size", t.ffn);
  t.n_layers = v.integer("num_hidden_layers", t.n_layers);
  t.n_heads = v.integer("num_attention_heads", t.n_heads);
  t.image_size = v.integer("image_size", t.image_size);
  t.patch_size = v.integer("patch_size", t.patch_size);
  t.channels = v.integer("num_channels", t.channels);
  t.layer_norm_eps = static_cast<float>(v.number("layer_norm_eps", t.layer_norm_eps));
  t.act = parse_activation(v.string("hidden_act", "quick_gelu"), vsource);
  STRATA_CHECK_KIND(ErrorKind::kFormat,
                    t.hidden > 0 && t.ffn > 0 && t.n_layers > 0 && t.n_heads > 0 && t.hidden % t.n_heads == 0, vsource,
                    ": hidden_size ", t.hidden, " must be a positive multiple of num_attention_heads ", t.n_heads,
                    " (and the layer and MLP sizes positive)");
  STRATA_CHECK_KIND(ErrorKind::kFormat, t.patch_size > 0 && t.image_size > 0 && t.image_size % t.patch_size == 0,
                    vsource, ": image_size ", t.image_size, " is not a whole number of ", t.patch_size, "-pixel patches");
  STRATA_CHECK_KIND(ErrorKind::kFormat, t.channels == 3, vsource, ": num_channels is ", t.channels,
                    "; images are RGB (3)");

  const boost::json::value* tc = f.find("text_config");
  STRATA_CHECK_KIND(ErrorKind::kFormat, tc != nullptr && tc->is_object(), source, ": 'text_config' is missing");
  c.text_config_json = boost::json::serialize(*tc);
  c.text_hidden = JsonFields{tc->get_object(), source + " (text_config)"}.integer("hidden_size");

  // transformers 4 says image_token_index, 5 image_token_id.
  c.image_token_id = static_cast<int32_t>(f.integer("image_token_id", f.integer("image_token_index", 32000)));
  c.projector_act = parse_activation(f.string("projector_hidden_act", "gelu"), source);
  c.projector_bias = f.boolean("multimodal_projector_bias", true);

  const boost::json::value* layer = f.find("vision_feature_layer");
  int64_t feature_layer = -2;
  if (layer != nullptr) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, layer->is_int64() || layer->is_uint64(), source,
                      ": vision_feature_layer must be one integer; a list of layers is not supported yet");
    feature_layer = f.integer("vision_feature_layer");
  }
  const int64_t states = t.n_layers + 1;  // the embeddings, then each layer's output
  c.feature_layer = feature_layer < 0 ? states + feature_layer : feature_layer;
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.feature_layer >= 0 && c.feature_layer < states, source,
                    ": vision_feature_layer ", feature_layer, " is outside the tower's ", states, " hidden states");

  const std::string select = f.string("vision_feature_select_strategy", "default");
  if (select == "default")
    c.select = FeatureSelect::kDefault;
  else if (select == "full")
    c.select = FeatureSelect::kFull;
  else
    STRATA_THROW(ErrorKind::kFormat, source, ": vision_feature_select_strategy '", select,
                 "' is not 'default' or 'full'");
  if (model_type == "llava_next") parse_anyres(f, c);
  return c;
}

}  // namespace strata
