// launcher/image_input.cpp: --image for LLaVA models.
#include "launcher/image_input.h"

#include <boost/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/models/llava_mmproj.h"
#include "runtime/models/llava_vision.h"
#include "runtime/vision/preprocess.h"

namespace strata::launcher {

std::optional<LlavaConfig> llava_config_of(const std::string& model_path) {
  const std::string config_path = (std::filesystem::path(model_path) / "config.json").string();
  if (!std::filesystem::is_directory(model_path) || !std::filesystem::exists(config_path)) return std::nullopt;
  std::ifstream in(config_path);
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(text.str(), ec);
  const boost::json::value* type = !ec && v.is_object() ? v.as_object().if_contains("model_type") : nullptr;
  if (type == nullptr || !type->is_string() || (type->as_string() != "llava" && type->as_string() != "llava_next"))
    return std::nullopt;
  return parse_llava_config(text.str(), config_path);
}

VisionPlacement vision_placement(ModelSession& session) { return {&session.tp(), session.shard().first_stage}; }

int32_t image_token_of(const Tokenizer* tokenizer, const std::string& model_path) {
  STRATA_CHECK_KIND(ErrorKind::kFormat, tokenizer != nullptr, model_path,
                    ": has no tokenizer, so strata cannot tell which token marks an image; --mmproj needs the text "
                    "GGUF's vocabulary to hold an '<image>' token");
  const int32_t id = tokenizer->token_to_id("<image>");
  STRATA_CHECK_KIND(ErrorKind::kFormat, id >= 0, model_path,
                    ": the vocabulary has no '<image>' token, which marks where an image goes; convert a checkpoint "
                    "whose tokenizer has one (e.g. llava-hf/llava-1.5-7b-hf) with llama.cpp's convert_hf_to_gguf.py");
  return id;
}

std::optional<VisionModel> vision_model_of(const SessionOptions& options, const ModelSession& session) {
  const std::optional<LlavaConfig> llava = llava_config_of(options.model_path);
  if (options.mmproj_path.empty()) {
    if (!llava) return std::nullopt;
    return VisionModel{*llava, options.model_path, vision::load_image_processor_config(options.model_path)};
  }
  STRATA_CHECK_KIND(ErrorKind::kConfig, !llava, "--mmproj ", options.mmproj_path, " was given with ",
                    options.model_path, ", a LLaVA directory with its own vision tower; --mmproj goes with a "
                    "text-model GGUF");
  const std::string& mmproj = options.mmproj_path;
  const int32_t image_token = image_token_of(session.has_tokenizer() ? &session.tokenizer() : nullptr,
                                             options.model_path);
  return VisionModel{read_mmproj_config(mmproj, session.config().hidden, image_token, options.model_path), mmproj,
                     mmproj_image_processor(mmproj)};
}

ImagePrompt image_prompt(const VisionModel& model, Backend& backend, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement) {
  std::vector<Tensor> pixels;
  std::vector<vision::Resolution> sizes;
  for (const std::string& path : image_paths) {
    const vision::RgbImage image = vision::read_image_file(path);
    pixels.push_back(vision::preprocess_image(image, model.processor));
    sizes.push_back({image.height, image.width});
  }
  if (!placement.first_stage) return expand_image_placeholders(ids, model.config, sizes);
  LlavaVision tower(model.config, backend, model.weights, placement.tp);
  return expand_image_prompt(ids, model.config, tower.encode_images(pixels, sizes), sizes);
}

ImagePrompt image_prompt(const SessionOptions& options, ModelSession& session, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement) {
  const std::optional<VisionModel> model = vision_model_of(options, session);
  STRATA_CHECK(model.has_value(), "--image needs a LLaVA model: a directory (config.json with model_type \"llava\" ",
               "or \"llava_next\") or a text-model GGUF with --mmproj; ", options.model_path, " is neither");
  return image_prompt(*model, session.backend(), ids, image_paths, placement);
}

std::vector<std::string> image_paths_of(const std::string& flag_value) {
  std::vector<std::string> paths;
  for (size_t at = 0; at <= flag_value.size();) {
    const size_t end = std::min(flag_value.find(',', at), flag_value.size());
    STRATA_CHECK(end > at, "--image '", flag_value, "' holds an empty file name; separate files with one comma");
    paths.push_back(flag_value.substr(at, end - at));
    at = end + 1;
  }
  return paths;
}

}  // namespace strata::launcher
