// runtime/vision/anyres.cpp: LLaVA-NeXT tiling (best pinpoint, fit, pad, cut) and the unpad window.
#include "runtime/vision/anyres.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace strata::vision {

bool valid_pinpoint(Resolution r, int64_t tile) {
  return tile > 0 && r.height > 0 && r.width > 0 && r.height % tile == 0 && r.width % tile == 0 &&
         r.height / tile <= kMaxPinpointTiles && r.width / tile <= kMaxPinpointTiles &&
         (r.height / tile) * (r.width / tile) <= kMaxPinpointTiles;
}

std::vector<Resolution> parse_grid_pinpoints(const boost::json::value& list, int64_t tile, const std::string& source) {
  STRATA_CHECK_KIND(ErrorKind::kFormat, list.is_array() && !list.get_array().empty(), source,
                    ": image_grid_pinpoints must be a non-empty list of [height, width] pairs");
  std::vector<Resolution> out;
  for (const boost::json::value& p : list.get_array()) {
    const bool pair = p.is_array() && p.get_array().size() == 2 && p.get_array()[0].is_int64() &&
                      p.get_array()[1].is_int64();
    STRATA_CHECK_KIND(ErrorKind::kFormat, pair, source, ": image_grid_pinpoints holds ", boost::json::serialize(p),
                      "; each entry must be [height, width]");
    const Resolution r{p.get_array()[0].get_int64(), p.get_array()[1].get_int64()};
    STRATA_CHECK_KIND(ErrorKind::kFormat, valid_pinpoint(r, tile), source, ": image_grid_pinpoints entry [", r.height,
                      ", ", r.width, "] is not a whole number of ", tile, "-pixel tiles, at most ", kMaxPinpointTiles,
                      " of them");
    out.push_back(r);
  }
  return out;
}

Resolution select_best_resolution(Resolution image, const std::vector<Resolution>& pinpoints) {
  STRATA_CHECK(!pinpoints.empty() && image.height > 0 && image.width > 0, "anyres: no grid pinpoints for a ",
               image.width, "x", image.height, " image");
  Resolution best;
  int64_t best_kept = 0, best_wasted = std::numeric_limits<int64_t>::max();
  const auto h = static_cast<double>(image.height), w = static_cast<double>(image.width);
  for (const Resolution& p : pinpoints) {
    const double scale = std::min(static_cast<double>(p.width) / w, static_cast<double>(p.height) / h);
    // Truncated like transformers' int(); an upscale adds no detail, so at most the image's own pixels count.
    const auto fit_w = static_cast<int64_t>(w * scale), fit_h = static_cast<int64_t>(h * scale);
    const int64_t kept = std::min(fit_w * fit_h, image.width * image.height);
    const int64_t wasted = p.width * p.height - kept;
    if (kept > best_kept || (kept == best_kept && wasted < best_wasted)) {
      best_kept = kept;
      best_wasted = wasted;
      best = p;
    }
  }
  STRATA_CHECK(best.height > 0, "anyres: no pinpoint fits a ", image.width, "x", image.height, " image");
  return best;
}

Resolution fit_inside(Resolution image, Resolution target) {
  const double scale_w = static_cast<double>(target.width) / static_cast<double>(image.width);
  const double scale_h = static_cast<double>(target.height) / static_cast<double>(image.height);
  if (scale_w < scale_h)
    return {std::min(static_cast<int64_t>(std::ceil(static_cast<double>(image.height) * scale_w)), target.height),
            target.width};
  return {target.height,
          std::min(static_cast<int64_t>(std::ceil(static_cast<double>(image.width) * scale_h)), target.width)};
}

GridWindow unpadded_window(Resolution image, Resolution grid) {
  // The image's side scaled to the grid, rounded to 7 decimals before truncation as transformers does (so
  // 5.9999999999 counts as 6).
  auto scaled = [](int64_t side, double scale) {
    return static_cast<int64_t>(std::round(static_cast<double>(side) * scale * 1e7) / 1e7);
  };
  const double image_aspect = static_cast<double>(image.width) / static_cast<double>(image.height);
  const double grid_aspect = static_cast<double>(grid.width) / static_cast<double>(grid.height);
  GridWindow w{0, 0, grid.height, grid.width};
  if (image_aspect > grid_aspect) {  // wider than the grid: padding above and below
    const int64_t rows = scaled(image.height, static_cast<double>(grid.width) / static_cast<double>(image.width));
    w.top = (grid.height - rows) / 2;
    w.rows = grid.height - 2 * w.top;
  } else {
    const int64_t cols = scaled(image.width, static_cast<double>(grid.height) / static_cast<double>(image.height));
    w.left = (grid.width - cols) / 2;
    w.cols = grid.width - 2 * w.left;
  }
  return w;
}

Tensor preprocess_anyres(const RgbImage& image, const ImageProcessorConfig& config) {
  STRATA_CHECK(config.anyres(), "anyres preprocessing needs image_grid_pinpoints");
  const int64_t tile = config.tile_side();
  STRATA_CHECK_KIND(ErrorKind::kFormat, tile > 0, "anyres image processor: no tile size (crop_size or size)");
  const Resolution best = select_best_resolution({image.height, image.width}, config.grid_pinpoints);
  STRATA_CHECK_KIND(ErrorKind::kFormat, best.height % tile == 0 && best.width % tile == 0,
                    "anyres image processor: grid pinpoint ", best.height, "x", best.width,
                    " is not a whole number of ", tile, "-pixel tiles");

  // Fit into the pinpoint, then center on black (integer offsets rounded down).
  const Resolution fit = fit_inside({image.height, image.width}, best);
  const RgbImage resized = resize_image(image, fit.width, fit.height, config.resample);
  RgbImage canvas{best.width, best.height, std::vector<uint8_t>(static_cast<size_t>(best.width * best.height * 3), 0)};
  const int64_t top = (best.height - fit.height) / 2, left = (best.width - fit.width) / 2;
  for (int64_t y = 0; y < fit.height; ++y)
    std::memcpy(&canvas.rgb[static_cast<size_t>(((y + top) * best.width + left) * 3)],
                &resized.rgb[static_cast<size_t>(y * fit.width * 3)], static_cast<size_t>(fit.width * 3));

  // The whole image as one tile: squeezed to size (height, width), or shortest_edge square.
  const int64_t base_h = config.resize_height > 0 ? config.resize_height : config.shortest_edge;
  const int64_t base_w = config.resize_width > 0 ? config.resize_width : config.shortest_edge;
  std::vector<Tensor> tiles{preprocess_tile(resize_image(image, base_w, base_h, config.resample), config)};
  for (int64_t ty = 0; ty < best.height; ty += tile)
    for (int64_t tx = 0; tx < best.width; tx += tile) {
      RgbImage cut{tile, tile, std::vector<uint8_t>(static_cast<size_t>(tile * tile * 3))};
      for (int64_t y = 0; y < tile; ++y)
        std::memcpy(&cut.rgb[static_cast<size_t>(y * tile * 3)],
                    &canvas.rgb[static_cast<size_t>(((ty + y) * best.width + tx) * 3)], static_cast<size_t>(tile * 3));
      tiles.push_back(preprocess_tile(cut, config));
    }
  Shape shape = tiles.front().shape();
  for (const Tensor& t : tiles)
    STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape() == shape, "anyres image processor: tiles of ",
                      shape_str(t.shape()), " and ", shape_str(shape), "; size and crop_size must agree");
  shape.insert(shape.begin(), static_cast<int64_t>(tiles.size()));
  Tensor out = Tensor::empty(shape, DType::kF32);
  for (size_t i = 0; i < tiles.size(); ++i)
    std::memcpy(out.data<float>() + static_cast<int64_t>(i) * tiles[i].numel(), tiles[i].data<float>(),
                static_cast<size_t>(tiles[i].nbytes()));
  return out;
}

}  // namespace strata::vision
