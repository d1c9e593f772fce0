// runtime/models/llava_image_encoder.h: a LLaVA (or LLaVA-NeXT) model's CLIP tower and projector as the
// Engine's ImageEncoder (runtime/image_encoder.h).
#pragma once
#include <string>

#include "runtime/image_encoder.h"
#include "runtime/models/llava_vision.h"

namespace strata {

class LlavaImageEncoder final : public ImageEncoder {
 public:
  // Loads the vision weights at `dir` (a LlavaForConditionalGeneration directory or an mmproj GGUF) onto
  // `backend`; with
  // `tp`, this rank's share of the tower split over that group (every rank of it encodes the same images
  // in the same step, as the engine's steps are the same on every rank of a stage).
  LlavaImageEncoder(const LlavaConfig& config, Backend& backend, const std::string& dir, Collective* tp = nullptr)
      : vision_(config, backend, dir, tp) {}
  int64_t features_for(int64_t height, int64_t width) const override {
    return vision_.config().features_for(height, width);
  }
  Shape pixel_shape_for(int64_t height, int64_t width) const override {
    const LlavaConfig& c = vision_.config();
    const ClipVisionConfig& v = c.vision;
    if (!c.anyres()) return {v.channels, v.image_size, v.image_size};
    return {c.tiles_for(height, width), v.channels, v.image_size, v.image_size};
  }
  Tensor encode(const std::vector<Tensor>& pixel_values, const std::vector<std::array<int64_t, 2>>& sizes) override {
    std::vector<vision::Resolution> s;
    for (const auto& [h, w] : sizes) s.push_back({h, w});
    return vision_.encode_images(pixel_values, s);
  }

 private:
  LlavaVision vision_;
};

}  // namespace strata
