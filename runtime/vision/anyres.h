// runtime/vision/anyres.h: LLaVA-NeXT's "anyres" image geometry and tiling. An image is resized (aspect
// kept) into the best of the checkpoint's image_grid_pinpoints, padded with black to fill it, and cut into
// tiles of the vision tower's input size; a copy of the whole image squeezed to one tile goes first. The
// model later crops the tiles' feature grid back to the image's aspect (the unpad step). The choices here
// follow LlavaNextImageProcessor (transformers), so the tile count and the feature count match its output.
#pragma once
#include <boost/json/fwd.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"
#include "runtime/vision/image.h"
#include "runtime/vision/preprocess.h"

namespace strata::vision {

// The most tiles one pinpoint may cut an image into. Released LLaVA-NeXT grids hold up to 4 (and
// LLaVA-OneVision's 36); the bound keeps a checkpoint from asking the encoder for millions of tokens an image.
inline constexpr int64_t kMaxPinpointTiles = 64;

// Whether a pinpoint is a whole number of `tile`-pixel tiles, at most kMaxPinpointTiles of them.
bool valid_pinpoint(Resolution r, int64_t tile);

// image_grid_pinpoints as configs write it: a non-empty list of [height, width] pairs, each valid_pinpoint;
// errors (kFormat) name `source` and the entry.
std::vector<Resolution> parse_grid_pinpoints(const boost::json::value& list, int64_t tile, const std::string& source);

// The pinpoint an image of `image` size is tiled into: the one that keeps the most of its pixels after
// an aspect-preserving fit (never counting an upscale as gained detail), ties going to the least padding;
// the first in list order among equals.
Resolution select_best_resolution(Resolution image, const std::vector<Resolution>& pinpoints);

// The size an image takes inside `target` when fitted with its aspect kept (the long side fills it, the
// other rounds up).
Resolution fit_inside(Resolution image, Resolution target);

// The part of a tiled image's feature grid that shows the image: a `grid` of (tile rows x patches per
// side) by (tile columns x patches per side) features loses the padding along the side the image did not
// fill, the same number of features from each end (transformers' unpad_image).
struct GridWindow {
  int64_t top = 0, left = 0, rows = 0, cols = 0;
};
GridWindow unpadded_window(Resolution image, Resolution grid);

// The tiles of an anyres processor (config.grid_pinpoints set): [1 + tiles, 3, crop, crop] f32 (host), the
// whole image resized to the tile size first, then the tiles of the padded best-resolution image in
// row-major order; each tile normalized as preprocess_image normalizes one image.
Tensor preprocess_anyres(const RgbImage& image, const ImageProcessorConfig& config);

}  // namespace strata::vision
