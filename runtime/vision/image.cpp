// runtime/vision/image.cpp: JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp) decoding into RGB.
// libjpeg and libpng report errors by calling back into the caller, which must not return: both are
// driven here from small functions that hold no C++ objects across their setjmp, so the longjmp out of
// a corrupt file skips no destructor; the decoder state lives in a caller-owned struct that frees it.
#include "runtime/vision/image.h"

#ifdef STRATA_HAVE_IMAGE_CODECS
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#endif
#ifdef STRATA_HAVE_WEBP
#include <webp/decode.h>
#endif

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

#include "runtime/error.h"

namespace strata::vision {
namespace {

constexpr ErrorKind kBadImage = ErrorKind::kInvalidArgument;

#ifdef STRATA_HAVE_IMAGE_CODECS
void check_dimensions(int64_t width, int64_t height, const ImageLimits& limits, const std::string& source,
                      ImageFormat format) {
  STRATA_CHECK_KIND(kBadImage, width > 0 && height > 0, source, ": the ", image_format_name(format),
                    " header declares an empty image (", width, "x", height, ")");
  STRATA_CHECK_KIND(kBadImage, width <= limits.max_pixels / height, source, ": the ", image_format_name(format),
                    " image is ", width, "x", height, " = ", width * height, " pixels, over the limit of ",
                    limits.max_pixels, " (a decompression bomb or an oversized upload); scale it down first");
}

// White background, straight (non-premultiplied) alpha, rounded: what convert_to_rgb's composite gives.
uint8_t over_white(uint8_t c, uint8_t alpha) {
  return static_cast<uint8_t>((c * alpha + 255 * (255 - alpha) + 127) / 255);
}

void rgba_to_rgb(const uint8_t* rgba, int64_t pixels, uint8_t* rgb) {
  for (int64_t i = 0; i < pixels; ++i)
    for (int c = 0; c < 3; ++c) rgb[i * 3 + c] = over_white(rgba[i * 4 + c], rgba[i * 4 + 3]);
}

// ---- JPEG ----

struct JpegErrors {
  jpeg_error_mgr base;  // first member: libjpeg passes &base back to the callbacks
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings pass, except the end of data arriving early: libjpeg would pad the picture with gray, and
// PIL (so transformers) refuses a truncated file, as this does.
void jpeg_warn(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
    std::snprintf(errors->message, sizeof(errors->message), "the data ends before the image does (truncated file)");
    std::longjmp(errors->jump, 1);
  }
}

struct JpegDecoder {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors{};
  bool created = false;
  JpegDecoder() = default;
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Reads the header and the APP1 (EXIF) markers; false with errors.message set when libjpeg fails.
bool jpeg_read_header_of(JpegDecoder& d, const uint8_t* data, size_t size) {
  d.cinfo.err = jpeg_std_error(&d.errors.base);
  d.errors.base.error_exit = jpeg_fail;
  d.errors.base.emit_message = jpeg_warn;
  if (setjmp(d.errors.jump)) return false;
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  jpeg_mem_src(&d.cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&d.cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&d.cinfo, TRUE);
  return true;
}

// Decodes every scanline into `out` (width * height * components bytes, components from
// out_color_space); false with errors.message set when libjpeg fails.
bool jpeg_read_pixels(JpegDecoder& d, J_COLOR_SPACE out_space, uint8_t* out) {
  if (setjmp(d.errors.jump)) return false;
  d.cinfo.out_color_space = out_space;
  jpeg_start_decompress(&d.cinfo);
  const size_t stride = static_cast<size_t>(d.cinfo.output_width) * static_cast<size_t>(d.cinfo.output_components);
  while (d.cinfo.output_scanline < d.cinfo.output_height) {
    JSAMPROW row = out + static_cast<size_t>(d.cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&d.cinfo, &row, 1);
  }
  jpeg_finish_decompress(&d.cinfo);
  return true;
}

RgbImage decode_jpeg(std::span<const uint8_t> bytes, const std::string& source, const ImageLimits& limits) {
  JpegDecoder d;
  STRATA_CHECK_KIND(kBadImage, jpeg_read_header_of(d, bytes.data(), bytes.size()), source,
                    ": corrupt JPEG header: ", d.errors.message);
  check_dimensions(d.cinfo.image_width, d.cinfo.image_height, limits, source, ImageFormat::kJpeg);
  int orientation = 1;
  for (jpeg_saved_marker_ptr m = d.cinfo.marker_list; m != nullptr; m = m->next)
    if (m->marker == JPEG_APP0 + 1 && orientation == 1) orientation = exif_orientation({m->data, m->data_length});

  RgbImage image;
  image.width = d.cinfo.image_width;
  image.height = d.cinfo.image_height;
  const int64_t pixels = image.width * image.height;
  // libjpeg converts grayscale and YCbCr to RGB itself; CMYK (and YCCK) it hands over as CMYK.
  const bool cmyk = d.cinfo.jpeg_color_space == JCS_CMYK || d.cinfo.jpeg_color_space == JCS_YCCK;
  std::vector<uint8_t> decoded(static_cast<size_t>(pixels * (cmyk ? 4 : 3)));
  STRATA_CHECK_KIND(kBadImage, jpeg_read_pixels(d, cmyk ? JCS_CMYK : JCS_RGB, decoded.data()), source,
                    ": corrupt JPEG data: ", d.errors.message);
  if (cmyk) {
    // Adobe's encoders store CMYK inverted (0 = full ink); PIL reads those as inverted too.
    const bool inverted = d.cinfo.saw_Adobe_marker;
    image.rgb.resize(static_cast<size_t>(pixels * 3));
    for (int64_t i = 0; i < pixels; ++i) {
      const uint8_t* p = &decoded[static_cast<size_t>(i * 4)];
      const int k = inverted ? p[3] : 255 - p[3];
      for (int c = 0; c < 3; ++c) {
        const int ink = inverted ? p[c] : 255 - p[c];
        image.rgb[static_cast<size_t>(i * 3 + c)] = static_cast<uint8_t>((ink * k + 127) / 255);
      }
    }
  } else {
    image.rgb = std::move(decoded);
  }
  return orientation == 1 ? image : apply_orientation(image, orientation);
}

// ---- PNG ----

struct PngInput {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = {};
};

[[noreturn]] void png_fail(png_structp png, png_const_charp message) {
  auto* input = static_cast<PngInput*>(png_get_error_ptr(png));
  std::snprintf(input->message, sizeof(input->message), "%s", message);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}  // warnings (bad ancillary chunks) do not stop a decode

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* input = static_cast<PngInput*>(png_get_io_ptr(png));
  if (length > input->size - input->pos) png_error(png, "the data ends before the image does (truncated file)");
  std::memcpy(out, input->data + input->pos, length);
  input->pos += length;
}

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  PngInput input;
  PngDecoder() = default;
  PngDecoder(const PngDecoder&) = delete;
  PngDecoder& operator=(const PngDecoder&) = delete;
  ~PngDecoder() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

bool png_read_header_of(PngDecoder& d) {
  d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d.input, png_fail, png_warn);
  if (d.png == nullptr) {
    std::snprintf(d.input.message, sizeof(d.input.message), "libpng could not start (out of memory)");
    return false;
  }
  d.info = png_create_info_struct(d.png);
  if (d.info == nullptr) {
    std::snprintf(d.input.message, sizeof(d.input.message), "libpng could not start (out of memory)");
    return false;
  }
  if (setjmp(png_jmpbuf(d.png))) return false;
  png_set_read_fn(d.png, &d.input, png_read_memory);
  png_read_info(d.png, d.info);
  return true;
}

// Expands palette, low bit depths and tRNS, strips 16 bits to 8 (the high byte, as PIL does) and gray
// to RGB; `rows` gets 3 or 4 (with alpha) bytes a pixel. Gamma chunks are ignored, as PIL ignores them.
bool png_read_pixels(PngDecoder& d, uint8_t* out, size_t stride, int* channels) {
  if (setjmp(png_jmpbuf(d.png))) return false;
  png_set_expand(d.png);
  png_set_strip_16(d.png);
  png_set_gray_to_rgb(d.png);
  const int passes = png_set_interlace_handling(d.png);
  png_read_update_info(d.png, d.info);
  *channels = png_get_channels(d.png, d.info);
  if (*channels != 3 && *channels != 4) png_error(d.png, "unexpected channel count after expansion");
  if (png_get_rowbytes(d.png, d.info) != stride / 4 * static_cast<size_t>(*channels))
    png_error(d.png, "unexpected row size after expansion");
  const png_uint_32 height = png_get_image_height(d.png, d.info);
  for (int pass = 0; pass < passes; ++pass)
    for (png_uint_32 y = 0; y < height; ++y) png_read_row(d.png, out + static_cast<size_t>(y) * stride, nullptr);
  png_read_end(d.png, nullptr);
  return true;
}

RgbImage decode_png(std::span<const uint8_t> bytes, const std::string& source, const ImageLimits& limits) {
  PngDecoder d;
  d.input.data = bytes.data();
  d.input.size = bytes.size();
  STRATA_CHECK_KIND(kBadImage, png_read_header_of(d), source, ": corrupt PNG header: ",
                    d.input.message);
  RgbImage image;
  image.width = png_get_image_width(d.png, d.info);
  image.height = png_get_image_height(d.png, d.info);
  check_dimensions(image.width, image.height, limits, source, ImageFormat::kPng);
  const int64_t pixels = image.width * image.height;
  // Rows are read 4 bytes a pixel wide whatever the channel count, so the buffer is sized before
  // libpng says whether alpha remains.
  const size_t stride = static_cast<size_t>(image.width) * 4;
  std::vector<uint8_t> decoded(stride * static_cast<size_t>(image.height));
  int channels = 0;
  STRATA_CHECK_KIND(kBadImage, png_read_pixels(d, decoded.data(), stride, &channels), source, ": corrupt PNG data: ",
                    d.input.message);
  image.rgb.resize(static_cast<size_t>(pixels * 3));
  for (int64_t y = 0; y < image.height; ++y) {
    const uint8_t* row = decoded.data() + static_cast<size_t>(y) * stride;
    uint8_t* out = image.rgb.data() + y * image.width * 3;
    if (channels == 4)
      rgba_to_rgb(row, image.width, out);
    else
      std::memcpy(out, row, static_cast<size_t>(image.width * 3));
  }
  return image;
}

#ifdef STRATA_HAVE_WEBP
// ---- WebP ----

const char* webp_status_text(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the data ends before the image does (truncated file)";
    case VP8_STATUS_OK: return "ok";
  }
  return "unknown error";
}

RgbImage decode_webp(std::span<const uint8_t> bytes, const std::string& source, const ImageLimits& limits) {
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(bytes.data(), bytes.size(), &features);
  STRATA_CHECK_KIND(kBadImage, status == VP8_STATUS_OK, source, ": corrupt WebP header: ", webp_status_text(status));
  STRATA_CHECK_KIND(kBadImage, !features.has_animation, source,
                    ": animated WebP is not supported; send one frame as a still image");
  RgbImage image;
  image.width = features.width;
  image.height = features.height;
  check_dimensions(image.width, image.height, limits, source, ImageFormat::kWebp);
  const int64_t pixels = image.width * image.height;
  image.rgb.resize(static_cast<size_t>(pixels * 3));
  if (features.has_alpha) {
    std::vector<uint8_t> rgba(static_cast<size_t>(pixels * 4));
    STRATA_CHECK_KIND(kBadImage,
                      WebPDecodeRGBAInto(bytes.data(), bytes.size(), rgba.data(), rgba.size(),
                                         static_cast<int>(image.width * 4)) != nullptr,
                      source, ": corrupt or truncated WebP data");
    rgba_to_rgb(rgba.data(), pixels, image.rgb.data());
  } else {
    STRATA_CHECK_KIND(kBadImage,
                      WebPDecodeRGBInto(bytes.data(), bytes.size(), image.rgb.data(), image.rgb.size(),
                                        static_cast<int>(image.width * 3)) != nullptr,
                      source, ": corrupt or truncated WebP data");
  }
  return image;
}

#endif  // STRATA_HAVE_WEBP
#endif  // STRATA_HAVE_IMAGE_CODECS

bool starts_with(std::span<const uint8_t> bytes, size_t offset, const char* magic) {
  const size_t n = std::strlen(magic);
  return bytes.size() >= offset + n && std::memcmp(bytes.data() + offset, magic, n) == 0;
}

}  // namespace

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg: return "JPEG";
    case ImageFormat::kPng: return "PNG";
    case ImageFormat::kWebp: return "WebP";
  }
  return "image";
}

ImageFormat sniff_image_format(std::span<const uint8_t> bytes, const std::string& source) {
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return ImageFormat::kJpeg;
  if (starts_with(bytes, 0, "\x89PNG\r\n\x1a\n")) return ImageFormat::kPng;
  if (starts_with(bytes, 0, "RIFF") && starts_with(bytes, 8, "WEBP")) return ImageFormat::kWebp;
  const char* other = nullptr;
  if (starts_with(bytes, 0, "GIF8")) other = "GIF";
  else if (starts_with(bytes, 0, "BM")) other = "BMP";
  else if (starts_with(bytes, 0, "II*") || starts_with(bytes, 0, "MM")) other = "TIFF";
  else if (starts_with(bytes, 4, "ftypavif") || starts_with(bytes, 4, "ftypheic")) other = "AVIF/HEIF";
  STRATA_THROW(kBadImage, source, ": unsupported image format",
               other != nullptr ? cat(" (the data looks like ", other, ")") : std::string(bytes.empty() ? " (empty)" : ""),
               "; send JPEG, PNG or WebP");
}

RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& source, const ImageLimits& limits) {
  STRATA_CHECK_KIND(kBadImage, static_cast<int64_t>(bytes.size()) <= limits.max_bytes, source, ": the image is ",
                    bytes.size(), " bytes, over the limit of ", limits.max_bytes, " bytes");
#ifdef STRATA_HAVE_IMAGE_CODECS
  switch (sniff_image_format(bytes, source)) {
    case ImageFormat::kJpeg: return decode_jpeg(bytes, source, limits);
    case ImageFormat::kPng: return decode_png(bytes, source, limits);
    case ImageFormat::kWebp:
#ifdef STRATA_HAVE_WEBP
      return decode_webp(bytes, source, limits);
#else
      STRATA_THROW(ErrorKind::kConfig, source, ": this strata was built without libwebp, so it reads JPEG and PNG "
                   "but not WebP; send JPEG or PNG, or install libwebp-dev pkg-config and rebuild");
#endif
  }
#else
  const ImageFormat format = sniff_image_format(bytes, source);
  STRATA_THROW(ErrorKind::kConfig, source, ": this strata was built without image decoding (libjpeg, libpng and "
               "libwebp were not found when it was built), so it cannot read this ", image_format_name(format),
               "; install libjpeg62-turbo-dev libpng-dev libwebp-dev pkg-config and rebuild");
#endif
  STRATA_THROW(ErrorKind::kInternal, source, ": unhandled image format");
}

RgbImage read_image_file(const std::string& path, const ImageLimits& limits) {
  struct stat st {};
  STRATA_CHECK_KIND(ErrorKind::kIo, ::stat(path.c_str(), &st) == 0, "cannot read image ", path, ": ",
                    std::strerror(errno));
  STRATA_CHECK_KIND(ErrorKind::kIo, S_ISREG(st.st_mode), "image ", path, " is not a regular file");
  STRATA_CHECK_KIND(kBadImage, st.st_size <= limits.max_bytes, path, ": the image is ", st.st_size,
                    " bytes, over the limit of ", limits.max_bytes, " bytes");
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "cannot open image ", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  STRATA_CHECK_KIND(ErrorKind::kIo, in.gcount() == static_cast<std::streamsize>(bytes.size()), "cannot read image ",
                    path, ": short read");
  return decode_image(bytes, path, limits);
}

int exif_orientation(std::span<const uint8_t> app1) {
  constexpr size_t kTiff = 6;  // after "Exif\0\0"
  if (app1.size() < kTiff + 8 || std::memcmp(app1.data(), "Exif\0\0", 6) != 0) return 1;
  const uint8_t* tiff = app1.data() + kTiff;
  const size_t size = app1.size() - kTiff;
  bool little;
  if (tiff[0] == 'I' && tiff[1] == 'I')
    little = true;
  else if (tiff[0] == 'M' && tiff[1] == 'M')
    little = false;
  else
    return 1;
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? tiff[at] | tiff[at + 1] << 8 : tiff[at] << 8 | tiff[at + 1];
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2);
  };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd > size - 2) return 1;
  const size_t entries = u16(ifd);
  for (size_t i = 0; i < entries; ++i) {
    const size_t entry = ifd + 2 + i * 12;
    if (entry + 12 > size) return 1;
    if (u16(entry) != 0x0112) continue;
    if (u16(entry + 2) != 3) return 1;  // orientation is a SHORT
    const uint32_t value = u16(entry + 8);
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

RgbImage apply_orientation(const RgbImage& image, int orientation) {
  STRATA_CHECK(orientation >= 1 && orientation <= 8, "EXIF orientation ", orientation, " is not 1..8");
  const int64_t w = image.width, h = image.height;
  const bool swap = orientation >= 5;  // the transposing ones turn the image on its side
  RgbImage out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.rgb.resize(image.rgb.size());
  for (int64_t oy = 0; oy < out.height; ++oy)
    for (int64_t ox = 0; ox < out.width; ++ox) {
      int64_t sx = ox, sy = oy;
      switch (orientation) {
        case 2: sx = w - 1 - ox; break;                       // mirrored
        case 3: sx = w - 1 - ox; sy = h - 1 - oy; break;      // upside down
        case 4: sy = h - 1 - oy; break;                       // mirrored vertically
        case 5: sx = oy; sy = ox; break;                      // transposed
        case 6: sx = oy; sy = h - 1 - ox; break;              // needs a quarter turn clockwise
        case 7: sx = w - 1 - oy; sy = h - 1 - ox; break;      // transversed
        case 8: sx = w - 1 - oy; sy = ox; break;              // needs a quarter turn counter-clockwise
        default: break;
      }
      std::memcpy(&out.rgb[static_cast<size_t>((oy * out.width + ox) * 3)],
                  &image.rgb[static_cast<size_t>((sy * w + sx) * 3)], 3);
    }
  return out;
}

}  // namespace strata::vision
