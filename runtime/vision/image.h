// runtime/vision/image.h: image files (JPEG, PNG, WebP) decoded into 8-bit RGB, the first step of a
// vision-language request. Decoding follows what a Hugging Face pipeline sees after
// transformers.image_utils.load_image + convert_to_rgb: JPEG EXIF orientation applied, grayscale and
// palette images expanded, alpha composited over white. Sizes are checked from the file's header
// before any pixel is decoded, so a small file that claims a huge image (a decompression bomb) costs
// nothing. Every failure is a strata::Error naming the source and what to do.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace strata::vision {

enum class ImageFormat { kJpeg, kPng, kWebp };
const char* image_format_name(ImageFormat format);

struct ImageLimits {
  int64_t max_bytes = 32ll << 20;       // encoded file size
  int64_t max_pixels = 8192ll * 8192;   // width * height as the header declares it
};

// Interleaved 8-bit RGB, row-major: pixel (x, y) channel c at rgb[(y * width + x) * 3 + c].
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> rgb;
  uint8_t at(int64_t x, int64_t y, int c) const { return rgb[static_cast<size_t>((y * width + x) * 3 + c)]; }
};

// The format the leading bytes announce; throws kInvalidArgument naming `source` when the bytes are no
// JPEG, PNG or WebP (and says which format they look like when it is a known other one).
ImageFormat sniff_image_format(std::span<const uint8_t> bytes, const std::string& source);

// Decodes an encoded image. Errors (strata::Error, kInvalidArgument): over `limits`, unsupported format,
// corrupt or truncated data; each names `source` ("request image 2", a file path).
RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& source, const ImageLimits& limits = {});
// Reads `path` (checking its size against limits.max_bytes before reading) and decodes it; kIo when the
// file cannot be read.
RgbImage read_image_file(const std::string& path, const ImageLimits& limits = {});

// The EXIF orientation tag (1..8) of an APP1 "Exif" payload (starting at "Exif\0\0"), 1 when absent or
// unreadable: a broken EXIF block never fails an image that decodes.
int exif_orientation(std::span<const uint8_t> app1);
// Turns an image stored with EXIF orientation `orientation` upright (1 leaves it as is).
RgbImage apply_orientation(const RgbImage& image, int orientation);

}  // namespace strata::vision
