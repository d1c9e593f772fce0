// runtime/models/llava_image_encoder.h: a LLaVA model's CLIP tower and projector as the Engine's
// ImageEncoder (runtime/image_encoder.h).
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
  int64_t features_per_image() const override { return vision_.config().features_per_image(); }
  Shape pixel_shape() const override {
    const ClipVisionConfig& v = vision_.config().vision;
    return {v.channels, v.image_size, v.image_size};
  }
  Tensor encode(const std::vector<Tensor>& pixel_values) override { return vision_.encode(pixel_values); }

 private:
  LlavaVision vision_;
};

}  // namespace strata
