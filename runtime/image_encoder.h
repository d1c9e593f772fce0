// runtime/image_encoder.h: what the serving Engine needs from a vision-language model's vision side: the
// features of a batch of preprocessed images, in the language model's embedding width. The Engine runs it
// on the first pipeline stage over the images of the requests a step admits; the features replace the
// embeddings of each image's placeholder positions. LlavaImageEncoder (runtime/models/) implements it. An
// image's feature count and pixel shape may depend on its size (LLaVA-NeXT's tiling), so both are asked
// per image.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

class ImageEncoder {
 public:
  virtual ~ImageEncoder() = default;
  // Features an image of height x width pixels (as decoded) yields: the prompt positions its placeholder
  // expands to.
  virtual int64_t features_for(int64_t height, int64_t width) const = 0;
  // The pixel_values shape such an image must have: [channels, h, w], or [tiles, channels, h, w].
  virtual Shape pixel_shape_for(int64_t height, int64_t width) const = 0;
  // Features [sum of features_for, hidden] on the backend, in the activation dtype, image by image;
  // sizes[i] is image i's {height, width}.
  virtual Tensor encode(const std::vector<Tensor>& pixel_values, const std::vector<std::array<int64_t, 2>>& sizes) = 0;
};

}  // namespace strata
