// runtime/vision/preprocess.h: an RGB image into the pixel values a vision tower reads, as the checkpoint's
// image processor says (CLIPImageProcessor, and LlavaImageProcessor's pad-to-square): optional padding to
// a square of the mean color, shortest-edge (or fixed-size) resize with PIL's resampling filters, center
// crop, rescale, normalize. The resize reproduces Pillow's (a separable convolution whose filter support
// widens with the downscale factor, 8-bit fixed-point coefficients, each pass rounded to 8 bits), so the
// output matches transformers' processor to within rounding.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"
#include "runtime/vision/image.h"

namespace strata::vision {

// PIL's resampling filters, by the numbers transformers' configs use for "resample".
enum class Resample : int { kNearest = 0, kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

// An image or tile size in pixels (or a grid size in features), height first as transformers lists them.
struct Resolution {
  int64_t height = 0, width = 0;
  bool operator==(const Resolution&) const = default;
};

struct ImageProcessorConfig {
  std::string processor_type = "CLIPImageProcessor";
  bool do_convert_rgb = true;  // decode_image already gives RGB; kept for the record
  bool do_pad = false;         // LLaVA: expand to a square filled with the mean color before resizing
  bool do_resize = true;
  int64_t shortest_edge = 0;   // resize so the shorter side is this (aspect kept) ...
  int64_t resize_height = 0;   // ... or to exactly this size when shortest_edge is 0
  int64_t resize_width = 0;
  Resample resample = Resample::kBicubic;
  bool do_center_crop = true;
  int64_t crop_height = 0;
  int64_t crop_width = 0;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<float, 3> image_mean = {0.48145466f, 0.4578275f, 0.40821073f};  // CLIP's
  std::array<float, 3> image_std = {0.26862954f, 0.26130258f, 0.27577711f};
  // LlavaNextImageProcessor's image_grid_pinpoints: the resolutions an image may be tiled into (anyres,
  // runtime/vision/anyres.h). Empty: one image gives one [3, H, W] tensor. (That processor's do_pad pads
  // the tile count of a batch, which strata never stacks; it does not set do_pad here.)
  std::vector<Resolution> grid_pinpoints;
  bool anyres() const { return !grid_pinpoints.empty(); }
  // An anyres tile's side: crop_size, else the resize size (LlavaNextImageProcessor's choice).
  int64_t tile_side() const { return crop_height > 0 ? crop_height : resize_height > 0 ? resize_height : shortest_edge; }
};

// Parses an image processor's JSON object (preprocessor_config.json, or the "image_processor" object of a
// transformers 5 processor_config.json); `source` names the file in errors (kFormat).
ImageProcessorConfig parse_image_processor_config(const std::string& json_text, const std::string& source);
// Reads `model_dir`/preprocessor_config.json, else the "image_processor" entry of processor_config.json;
// throws kFormat naming both when neither exists.
ImageProcessorConfig load_image_processor_config(const std::string& model_dir);

// Resizes an 8-bit RGB image as Pillow's Image.resize((width, height), filter) does (Pillow 13's pass order).
RgbImage resize_image(const RgbImage& image, int64_t width, int64_t height, Resample filter);
// LLaVA's expand-to-square: the image centered on a square of `fill`, as LlavaImageProcessor pads.
RgbImage pad_to_square(const RgbImage& image, const std::array<uint8_t, 3>& fill);

// pixel_values of one image, f32 (host): [3, H, W], or with an anyres config [1 + tiles, 3, crop, crop]
// (preprocess_anyres).
Tensor preprocess_image(const RgbImage& image, const ImageProcessorConfig& config);
// [3, H, W] of one image or tile, whatever grid_pinpoints says.
Tensor preprocess_tile(const RgbImage& image, const ImageProcessorConfig& config);

}  // namespace strata::vision
