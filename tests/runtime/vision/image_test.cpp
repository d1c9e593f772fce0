// tests/runtime/vision/image_test.cpp: JPEG/PNG/WebP decoding against what transformers sees of the same
// files (Pillow's decode, ImageOps.exif_transpose, convert_to_rgb; fixtures from
// tools/reference/make_vision_fixtures.py), and every class of bad image: decompression bombs (refused
// from the header), oversized files, truncated and corrupt data, unsupported formats.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>

#include "runtime/error.h"
#include "runtime/vision/image.h"
#include "test_util.h"

namespace strata::vision {
namespace {

std::string image_path(const std::string& name) { return test::fixture("vision/images/" + name); }

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Largest per-channel difference from Pillow's pixels; -1 when the sizes differ.
int max_difference(const RgbImage& image, const std::string& name) {
  const test::NpyArray ref = test::read_npy(test::fixture("vision/decoded/" + name + ".npy"));
  if (ref.shape != std::vector<int64_t>{image.height, image.width, 3}) return -1;
  int worst = 0;
  for (size_t i = 0; i < ref.data.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<int>(ref.data[i]) - static_cast<int>(image.rgb[i])));
  return worst;
}

struct DecodeCase {
  const char* name;
  int tolerance;  // in 8-bit levels
};

class DecodeMatchesPillow : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(DecodeMatchesPillow, PixelsWithinTolerance) {
  const DecodeCase c = GetParam();
  const RgbImage image = read_image_file(image_path(c.name));
  const int diff = max_difference(image, c.name);
  ASSERT_GE(diff, 0) << c.name << ": decoded as " << image.width << "x" << image.height
                     << ", not Pillow's size (orientation?)";
  EXPECT_LE(diff, c.tolerance) << c.name;
  std::printf("%s: %lldx%lld, max difference from Pillow %d/255\n", c.name, static_cast<long long>(image.width),
              static_cast<long long>(image.height), diff);
}

// PNG and lossless WebP are exact by nature (alpha compositing included); JPEG and lossy WebP decoders may
// round differently between library versions (Pillow bundles its own libjpeg-turbo and libwebp), so they
// get one level. Measured with Debian 12's libraries against Pillow 13: 0 everywhere.
INSTANTIATE_TEST_SUITE_P(
    Images, DecodeMatchesPillow,
    ::testing::Values(DecodeCase{"orient6.jpg", 1}, DecodeCase{"alpha.png", 0}, DecodeCase{"palette.png", 0},
                      DecodeCase{"gray.png", 0}, DecodeCase{"photo.webp", 1},
                      DecodeCase{"alpha.webp", 0}, DecodeCase{"orient1_small.jpg", 1},
                      DecodeCase{"orient2_small.jpg", 1}, DecodeCase{"orient3_small.jpg", 1},
                      DecodeCase{"orient4_small.jpg", 1}, DecodeCase{"orient5_small.jpg", 1},
                      DecodeCase{"orient6_small.jpg", 1}, DecodeCase{"orient7_small.jpg", 1},
                      DecodeCase{"orient8_small.jpg", 1}),
    [](const auto& info) {
      std::string n = info.param.name;
      for (char& ch : n)
        if (ch == '.') ch = '_';
      return n;
    });

TEST(ImageDecode, ExifOrientationTurnsTheJpegUpright) {
  // The file stores 40x24 and asks for a quarter turn: upright it is 24 wide, 40 tall.
  const RgbImage image = read_image_file(image_path("orient6.jpg"));
  EXPECT_EQ(image.width, 24);
  EXPECT_EQ(image.height, 40);
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ImageDecode, DecompressionBombsAreRefusedFromTheHeader) {
  // Each file is a few dozen bytes claiming billions of pixels; nothing is decoded.
  for (const char* name : {"bomb.png", "bomb.jpg", "bomb.webp"})
    expect_error([&] { read_image_file(image_path(name)); }, "over the limit of");
  // A tighter pixel limit refuses an ordinary image too, and names it.
  ImageLimits tight;
  tight.max_pixels = 100;
  expect_error([&] { read_image_file(image_path("large.png"), tight); }, "120x90 = 10800 pixels");
}

TEST(ImageDecode, FilesOverTheByteLimitAreRefusedBeforeReading) {
  ImageLimits tight;
  tight.max_bytes = 100;
  expect_error([&] { read_image_file(image_path("large.png"), tight); }, "over the limit of 100 bytes");
  const std::vector<uint8_t> bytes = read_bytes(image_path("photo.webp"));
  expect_error([&] { decode_image(bytes, "upload", tight); }, "upload: the image is");
}

TEST(ImageDecode, TruncatedFilesFailWithAClearError) {
  for (const char* name : {"orient6.jpg", "alpha.png", "photo.webp", "alpha.webp"}) {
    std::vector<uint8_t> bytes = read_bytes(image_path(name));
    bytes.resize(bytes.size() * 2 / 3);
    try {
      decode_image(bytes, name);
      ADD_FAILURE() << name << ": a truncated file decoded";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(m.find(name), std::string::npos) << m;
      EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("corrupt") != std::string::npos) << m;
    }
  }
}

TEST(ImageDecode, CorruptDataFails) {
  for (const char* name : {"orient6.jpg", "large.png", "alpha.webp"}) {
    std::vector<uint8_t> bytes = read_bytes(image_path(name));
    for (size_t i = bytes.size() / 4; i < bytes.size() * 3 / 4; i += 7) bytes[i] ^= 0x5A;
    // PNG checks CRCs and lossless WebP its bitstream; a JPEG's entropy-coded data has no checksum, so
    // scrambling it may still decode (to garbage), but its header must survive: corrupt the markers too.
    if (std::string(name).ends_with(".jpg"))
      for (size_t i = 2; i < 40; ++i) bytes[i] = 0xFF;
    expect_error([&] { decode_image(bytes, name); }, "corrupt");
  }
}

TEST(ImageDecode, UnsupportedFormatsAreNamed) {
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  expect_error([&] { decode_image({reinterpret_cast<const uint8_t*>(gif.data()), gif.size()}, "a.gif"); },
               "looks like GIF");
  const std::string text = "hello, not an image";
  expect_error([&] { decode_image({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, "x"); },
               "unsupported image format");
  expect_error([&] { decode_image({}, "empty"); }, "(empty)");
}

TEST(ImageDecode, MissingFileIsAnIoError) {
  try {
    read_image_file(image_path("no-such-image.png"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("no-such-image.png"), std::string::npos);
  }
}

TEST(ImageDecode, BrokenExifNeverFailsTheImage) {
  const uint8_t junk[] = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0xFF, 0xFF, 0xFF, 0xF0, 0, 1};
  EXPECT_EQ(exif_orientation(junk), 1);
  EXPECT_EQ(exif_orientation({}), 1);
}

}  // namespace
}  // namespace strata::vision
