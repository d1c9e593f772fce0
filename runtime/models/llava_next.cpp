// runtime/models/llava_next.cpp: LLaVA-NeXT feature packing (base tile, unpadded grid, row newlines).
#include "runtime/models/llava_next.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/vision/anyres.h"

namespace strata {

void pack_anyres_features(Backend& backend, const LlavaConfig& config, const Tensor& tiles, const Tensor& newline,
                          vision::Resolution image, Tensor& out) {
  const ClipVisionConfig& v = config.vision;
  const int64_t side = v.patches_per_side(), per_tile = v.n_patches();
  const vision::Resolution best = vision::select_best_resolution(image, config.grid_pinpoints);
  const int64_t tiles_across = best.width / v.image_size;
  const int64_t n_tiles = config.tiles_for(image.height, image.width);
  STRATA_CHECK(tiles.rank() == 2 && tiles.dim(0) == n_tiles * per_tile && tiles.dim(1) == config.text_hidden,
               "LLaVA-NeXT packing: tile features ", shape_str(tiles.shape()), " are not [", n_tiles, " x ", per_tile,
               ", ", config.text_hidden, "] for a ", image.width, "x", image.height, " image");
  const int64_t total = config.features_for(image.height, image.width);
  STRATA_CHECK(out.rank() == 2 && out.dim(0) == total && out.dim(1) == config.text_hidden, "LLaVA-NeXT packing: ",
               "output ", shape_str(out.shape()), " is not [", total, ", ", config.text_hidden, "]");

  Tensor base = out.rows(0, per_tile);
  backend.copy(tiles.rows(0, per_tile), base);
  int64_t o = per_tile;
  // Feature (r, c) of the joined grid is patch (r % side, c % side) of tile (r / side, c / side); a tile's
  // patches are row-major, so each grid row is a few contiguous runs, one per tile it crosses.
  const vision::GridWindow kept = vision::unpadded_window(image, {best.height / v.image_size * side, tiles_across * side});
  for (int64_t r = kept.top; r < kept.top + kept.rows; ++r) {
    for (int64_t c = kept.left; c < kept.left + kept.cols;) {
      const int64_t x = c % side, run = std::min(side - x, kept.left + kept.cols - c);
      const int64_t tile = 1 + (r / side) * tiles_across + c / side;
      Tensor dst = out.rows(o, run);
      backend.copy(tiles.rows(tile * per_tile + (r % side) * side + x, run), dst);
      o += run;
      c += run;
    }
    Tensor end_of_row = out.rows(o++, 1);
    backend.copy(newline, end_of_row);
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, o == total, "LLaVA-NeXT packing wrote ", o, " of ", total, " features");
}

}  // namespace strata
