// fuzz/image_fuzz.cpp: libFuzzer target for image decoding (JPEG via libjpeg-turbo, PNG via libpng, WebP via
// libwebp, and the EXIF orientation reader): requests carry untrusted image bytes. Any strata::Error is a
// clean rejection; crashes, leaks and sanitizer reports are bugs. The pixel limit stays small so a header
// that claims a large image is refused instead of allocated.
#include <cstddef>
#include <cstdint>

#include "runtime/error.h"
#include "runtime/vision/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  strata::vision::ImageLimits limits;
  limits.max_pixels = 1 << 20;
  try {
    const strata::vision::RgbImage image = strata::vision::decode_image({data, size}, "fuzz image", limits);
    if (image.rgb.size() != static_cast<size_t>(image.width * image.height * 3)) __builtin_trap();
  } catch (const strata::Error&) {
  }
  strata::vision::exif_orientation({data, size});
  return 0;
}
