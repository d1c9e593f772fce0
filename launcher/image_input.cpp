// launcher/image_input.cpp: --image for LLaVA models.
#include "launcher/image_input.h"

#include <boost/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
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

ImagePrompt image_prompt(const std::string& model_dir, Backend& backend, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement) {
  const std::string config_path = (std::filesystem::path(model_dir) / "config.json").string();
  STRATA_CHECK(std::filesystem::is_directory(model_dir) && std::filesystem::exists(config_path), "--image needs a ",
               "LLaVA model directory (config.json with model_type \"llava\" or \"llava_next\"); ", model_dir,
               " is not one");
  std::ifstream in(config_path);
  std::stringstream text;
  text << in.rdbuf();
  const LlavaConfig config = parse_llava_config(text.str(), config_path);
  const vision::ImageProcessorConfig processor = vision::load_image_processor_config(model_dir);
  std::vector<Tensor> pixels;
  std::vector<vision::Resolution> sizes;
  for (const std::string& path : image_paths) {
    const vision::RgbImage image = vision::read_image_file(path);
    pixels.push_back(vision::preprocess_image(image, processor));
    sizes.push_back({image.height, image.width});
  }
  if (!placement.first_stage) return expand_image_placeholders(ids, config, sizes);
  LlavaVision tower(config, backend, model_dir, placement.tp);
  return expand_image_prompt(ids, config, tower.encode_images(pixels, sizes), sizes);
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
