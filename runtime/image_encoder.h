// runtime/image_encoder.h: what the serving Engine needs from a vision-language model's vision side: the
// features of a batch of preprocessed images, in the language model's embedding width. The Engine runs it
// on the first pipeline stage over the images of the requests a step admits; the features replace the
// embeddings of each image's placeholder positions. LlavaImageEncoder (runtime/models/) implements it.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

class ImageEncoder {
 public:
  virtual ~ImageEncoder() = default;
  // Features one image yields (the prompt positions its placeholder expands to).
  virtual int64_t features_per_image() const = 0;
  // The pixel_values shape every image must have: [channels, height, width].
  virtual Shape pixel_shape() const = 0;
  // Features [images * features_per_image, hidden] on the backend, in the activation dtype, image by image.
  virtual Tensor encode(const std::vector<Tensor>& pixel_values) = 0;
};

}  // namespace strata
