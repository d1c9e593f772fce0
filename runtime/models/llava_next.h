// runtime/models/llava_next.h: LLaVA-NeXT's packing of one image's tile features into the sequence the
// language model reads (transformers' LlavaNextModel.pack_image_features with spatial_unpad): the base
// tile's features first, then the tiles' patch grids joined into one feature grid, cropped back to the
// image's aspect (unpadded_window), each row closed by the image_newline vector.
#pragma once
#include "runtime/backend.h"
#include "runtime/models/llava_config.h"

namespace strata {

// `tiles` [config.tiles_for(h, w) * n_patches, text_hidden]: the projected features of one image's tiles,
// base first (LlavaVision::encode of its pixel_values). `newline` [1, text_hidden]. Writes
// [config.features_for(h, w), text_hidden] into `out` on the backend (row copies only).
void pack_anyres_features(Backend& backend, const LlavaConfig& config, const Tensor& tiles, const Tensor& newline,
                          vision::Resolution image, Tensor& out);

}  // namespace strata
