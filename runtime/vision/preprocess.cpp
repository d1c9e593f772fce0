// runtime/vision/preprocess.cpp: image processor configs and the resize / crop / normalize pipeline.
#include "runtime/vision/preprocess.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <sstream>
#include <vector>

#include "runtime/error.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/vision/anyres.h"
#include "runtime/vision/vision_json.h"

namespace strata::vision {
namespace {

// ---- Pillow-compatible resampling ----

double bicubic(double x) {  // Keys' cubic with a = -0.5, Pillow's choice
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}
double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
double box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
double hamming(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= std::numbers::pi;
  return std::sin(x) / x * (0.54 + 0.46 * std::cos(x));
}
double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}
double lanczos3(double x) { return x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0; }

struct Filter {
  double (*weight)(double);
  double support;
};

Filter filter_of(Resample r) {
  switch (r) {
    case Resample::kBicubic: return {bicubic, 2.0};
    case Resample::kBilinear: return {triangle, 1.0};
    case Resample::kBox: return {box, 0.5};
    case Resample::kHamming: return {hamming, 1.0};
    case Resample::kLanczos: return {lanczos3, 3.0};
    case Resample::kNearest: break;
  }
  STRATA_THROW(ErrorKind::kInvalidArgument, "nearest-neighbour resampling is not supported; use bicubic (3)");
}

// Pillow keeps 8-bit coefficients in fixed point with this many fraction bits (32 - 8 - 2).
constexpr int kCoeffBits = 22;

// For each output index along one axis: the first input index and the fixed-point weights of the inputs
// it reads. The filter stretches by the downscale factor, so a shrink averages every input it covers
// (antialiasing) instead of sampling a few.
struct AxisTaps {
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<int32_t> weights;  // count.max() per output, zero padded
  int64_t stride = 0;
};

AxisTaps axis_taps(int64_t in_size, int64_t out_size, const Filter& filter) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double stretch = std::max(scale, 1.0);
  const double support = filter.support * stretch;
  const double inv_stretch = 1.0 / stretch;
  AxisTaps taps;
  taps.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(static_cast<size_t>(out_size));
  taps.count.resize(static_cast<size_t>(out_size));
  taps.weights.assign(static_cast<size_t>(out_size * taps.stride), 0);
  std::vector<double> w(static_cast<size_t>(taps.stride));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    // Truncation toward zero, then clamping, as Pillow bounds its window.
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t n = std::min(hi - lo, taps.stride);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      // Times the reciprocal, not divided: Pillow's rounding, which decides ties in the fixed-point weights.
      w[static_cast<size_t>(i)] = filter.weight((static_cast<double>(i + lo) - center + 0.5) * inv_stretch);
      total += w[static_cast<size_t>(i)];
    }
    for (int64_t i = 0; i < n; ++i) {
      const double k = total != 0.0 ? w[static_cast<size_t>(i)] / total : 0.0;
      const double fixed = k * (1 << kCoeffBits);
      taps.weights[static_cast<size_t>(o * taps.stride + i)] =
          static_cast<int32_t>(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    taps.first[static_cast<size_t>(o)] = lo;
    taps.count[static_cast<size_t>(o)] = n;
  }
  return taps;
}

uint8_t fixed_to_u8(int64_t acc) {
  const int64_t v = (acc + (int64_t{1} << (kCoeffBits - 1))) >> kCoeffBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

RgbImage resize_horizontal(const RgbImage& in, int64_t width, const Filter& filter) {
  const AxisTaps taps = axis_taps(in.width, width, filter);
  RgbImage out{width, in.height, std::vector<uint8_t>(static_cast<size_t>(width * in.height * 3))};
  for (int64_t y = 0; y < in.height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      const int32_t* w = &taps.weights[static_cast<size_t>(x * taps.stride)];
      const int64_t first = taps.first[static_cast<size_t>(x)], n = taps.count[static_cast<size_t>(x)];
      for (int c = 0; c < 3; ++c) {
        int64_t acc = 0;
        for (int64_t i = 0; i < n; ++i) acc += static_cast<int64_t>(in.at(first + i, y, c)) * w[i];
        out.rgb[static_cast<size_t>((y * width + x) * 3 + c)] = fixed_to_u8(acc);
      }
    }
  return out;
}

RgbImage resize_vertical(const RgbImage& in, int64_t height, const Filter& filter) {
  const AxisTaps taps = axis_taps(in.height, height, filter);
  RgbImage out{in.width, height, std::vector<uint8_t>(static_cast<size_t>(in.width * height * 3))};
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* w = &taps.weights[static_cast<size_t>(y * taps.stride)];
    const int64_t first = taps.first[static_cast<size_t>(y)], n = taps.count[static_cast<size_t>(y)];
    for (int64_t x = 0; x < in.width; ++x)
      for (int c = 0; c < 3; ++c) {
        int64_t acc = 0;
        for (int64_t i = 0; i < n; ++i) acc += static_cast<int64_t>(in.at(x, first + i, c)) * w[i];
        out.rgb[static_cast<size_t>((y * in.width + x) * 3 + c)] = fixed_to_u8(acc);
      }
  }
  return out;
}

std::string read_text(const std::string& path) { return read_file_bytes(path, "processor config"); }

// transformers writes sizes as {"shortest_edge": n}, {"height": h, "width": w}, or (older files) a bare n.
struct SizeField {
  int64_t shortest_edge = 0, height = 0, width = 0;
};

SizeField size_field(const JsonFields& f, const char* key, bool bare_is_shortest) {
  SizeField s;
  const boost::json::value* v = f.find(key);
  if (v == nullptr) return s;
  if (v->is_int64() || v->is_uint64()) {
    const int64_t n = f.integer(key);
    if (bare_is_shortest)
      s.shortest_edge = n;
    else
      s.height = s.width = n;
    return s;
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_object(), f.source, ": field '", key,
                    "' must be an integer or an object of shortest_edge / height and width");
  const JsonFields sub{v->get_object(), f.source};
  s.shortest_edge = sub.integer("shortest_edge", 0);
  s.height = sub.integer("height", 0);
  s.width = sub.integer("width", 0);
  STRATA_CHECK_KIND(ErrorKind::kFormat, sub.find("longest_edge") == nullptr && sub.find("max_height") == nullptr,
                    f.source, ": field '", key, "': longest_edge / max_height sizes are not supported yet");
  STRATA_CHECK_KIND(ErrorKind::kFormat, s.shortest_edge > 0 || (s.height > 0 && s.width > 0), f.source, ": field '",
                    key, "' needs shortest_edge, or height and width (positive)");
  return s;
}

std::array<float, 3> triple(const JsonFields& f, const char* key, const std::array<float, 3>& fallback) {
  const boost::json::value* v = f.find(key);
  if (v == nullptr) return fallback;
  if (v->is_number()) {
    const auto x = static_cast<float>(f.number(key, 0));
    return {x, x, x};
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_array() && v->get_array().size() == 3, f.source, ": field '", key,
                    "' must be a number or a list of 3 numbers (one per RGB channel)");
  std::array<float, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    const boost::json::value& e = v->get_array()[i];
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.is_number(), f.source, ": field '", key, "' holds a non-number");
    out[i] = static_cast<float>(e.to_number<double>());
  }
  return out;
}

}  // namespace

ImageProcessorConfig parse_image_processor_config(const std::string& json_text, const std::string& source) {
  const boost::json::value root = parse_json_object(json_text, source);
  const JsonFields f{root.get_object(), source};
  ImageProcessorConfig c;
  c.processor_type = f.string("image_processor_type", "CLIPImageProcessor");
  c.do_convert_rgb = f.boolean("do_convert_rgb", true);
  c.do_pad = f.boolean("do_pad", false);
  c.do_resize = f.boolean("do_resize", true);
  const SizeField size = size_field(f, "size", /*bare_is_shortest=*/true);
  c.shortest_edge = size.shortest_edge;
  c.resize_height = size.height;
  c.resize_width = size.width;
  STRATA_CHECK_KIND(ErrorKind::kFormat, !c.do_resize || c.shortest_edge > 0 || c.resize_height > 0, source,
                    ": do_resize is set but 'size' is missing");
  const int64_t resample = f.integer("resample", 3);
  STRATA_CHECK_KIND(ErrorKind::kFormat, resample >= 1 && resample <= 5, source, ": resample ", resample,
                    " is not one of PIL's filters 1..5 (3 = bicubic); nearest (0) is not supported");
  c.resample = static_cast<Resample>(resample);
  c.do_center_crop = f.boolean("do_center_crop", true);
  const SizeField crop = size_field(f, "crop_size", /*bare_is_shortest=*/false);
  c.crop_height = crop.height;
  c.crop_width = crop.width;
  STRATA_CHECK_KIND(ErrorKind::kFormat, !c.do_center_crop || (c.crop_height > 0 && c.crop_width > 0), source,
                    ": do_center_crop is set but 'crop_size' has no height and width");
  c.do_rescale = f.boolean("do_rescale", true);
  c.rescale_factor = f.number("rescale_factor", 1.0 / 255.0);
  c.do_normalize = f.boolean("do_normalize", true);
  c.image_mean = triple(f, "image_mean", c.image_mean);
  c.image_std = triple(f, "image_std", c.image_std);
  for (float s : c.image_std)
    STRATA_CHECK_KIND(ErrorKind::kFormat, !c.do_normalize || s != 0.f, source, ": image_std holds a zero");
  if (const boost::json::value* pins = f.find("image_grid_pinpoints")) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, c.tile_side() > 0, source,
                      ": image_grid_pinpoints needs a tile size (crop_size or size)");
    c.grid_pinpoints = parse_grid_pinpoints(*pins, c.tile_side(), source);
  }
  // LlavaNextImageProcessor's do_pad pads a batch's tile counts to one length; it never pads an image to a
  // square (that is LlavaImageProcessor's do_pad).
  if (c.processor_type.rfind("LlavaNext", 0) == 0 || c.anyres()) c.do_pad = false;
  return c;
}

ImageProcessorConfig load_image_processor_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path pre = fs::path(model_dir) / "preprocessor_config.json";
  if (fs::exists(pre)) return parse_image_processor_config(read_text(pre.string()), pre.string());
  const fs::path proc = fs::path(model_dir) / "processor_config.json";
  STRATA_CHECK_KIND(ErrorKind::kFormat, fs::exists(proc), model_dir,
                    ": no image processor config (neither preprocessor_config.json nor processor_config.json); "
                    "copy the one that came with the checkpoint");
  const boost::json::value root = parse_json_object(read_text(proc.string()), proc.string());
  const boost::json::value* ip = root.get_object().if_contains("image_processor");
  STRATA_CHECK_KIND(ErrorKind::kFormat, ip != nullptr && ip->is_object(), proc.string(),
                    ": no 'image_processor' object");
  return parse_image_processor_config(boost::json::serialize(*ip), proc.string() + " (image_processor)");
}

RgbImage resize_image(const RgbImage& image, int64_t width, int64_t height, Resample filter) {
  STRATA_CHECK(width > 0 && height > 0 && image.width > 0 && image.height > 0, "resize of a ", image.width, "x",
               image.height, " image to ", width, "x", height);
  const Filter f = filter_of(filter);
  // Two passes, each rounded to 8 bits; an axis that keeps its size is not filtered at all. Pillow runs
  // the horizontal pass first, except (since Pillow 13) where the height shrinks by more than twice the
  // columns the width loses: then the vertical one. The order moves some pixels by one level.
  const bool vertical_first = height < image.height && image.height - height > 2 * (image.width - width);
  if (vertical_first) {
    const RgbImage out = resize_vertical(image, height, f);
    return width != image.width ? resize_horizontal(out, width, f) : out;
  }
  RgbImage out = width != image.width ? resize_horizontal(image, width, f) : image;
  return height != image.height ? resize_vertical(out, height, f) : out;
}

RgbImage pad_to_square(const RgbImage& image, const std::array<uint8_t, 3>& fill) {
  if (image.width == image.height) return image;
  const int64_t side = std::max(image.width, image.height);
  const int64_t x0 = (side - image.width) / 2, y0 = (side - image.height) / 2;
  RgbImage out{side, side, std::vector<uint8_t>(static_cast<size_t>(side * side * 3))};
  for (int64_t i = 0; i < side * side; ++i)
    for (int c = 0; c < 3; ++c) out.rgb[static_cast<size_t>(i * 3 + c)] = fill[static_cast<size_t>(c)];
  for (int64_t y = 0; y < image.height; ++y)
    std::copy_n(image.rgb.begin() + y * image.width * 3, image.width * 3,
                out.rgb.begin() + ((y + y0) * side + x0) * 3);
  return out;
}

Tensor preprocess_image(const RgbImage& image, const ImageProcessorConfig& config) {
  return config.anyres() ? preprocess_anyres(image, config) : preprocess_tile(image, config);
}

Tensor preprocess_tile(const RgbImage& input, const ImageProcessorConfig& config) {
  RgbImage image = input;
  if (config.do_pad) {
    // LlavaImageProcessor fills with the mean color in 8 bits, truncated (int(mean * 255)).
    std::array<uint8_t, 3> fill{};
    for (size_t c = 0; c < 3; ++c)
      fill[c] = static_cast<uint8_t>(std::clamp(static_cast<int>(config.image_mean[c] * 255.0), 0, 255));
    image = pad_to_square(image, fill);
  }
  if (config.do_resize) {
    int64_t w = config.resize_width, h = config.resize_height;
    if (config.shortest_edge > 0) {
      // transformers keeps the aspect and truncates the long side.
      const int64_t s = config.shortest_edge;
      if (image.width <= image.height) {
        w = s;
        h = static_cast<int64_t>(static_cast<double>(s) * image.height / image.width);
      } else {
        h = s;
        w = static_cast<int64_t>(static_cast<double>(s) * image.width / image.height);
      }
    }
    if (w != image.width || h != image.height) image = resize_image(image, w, h, config.resample);
  }
  int64_t out_h = image.height, out_w = image.width, top = 0, left = 0;
  if (config.do_center_crop) {
    out_h = config.crop_height;
    out_w = config.crop_width;
    // A crop larger than the image pads it with zeros, the image centered (rounding the pad up).
    auto offset = [](int64_t size, int64_t crop) { return size >= crop ? (size - crop) / 2 : -((crop - size + 1) / 2); };
    top = offset(image.height, out_h);
    left = offset(image.width, out_w);
  }
  Tensor out = Tensor::empty({3, out_h, out_w}, DType::kF32);
  float* px = out.data<float>();
  const double scale = config.do_rescale ? config.rescale_factor : 1.0;
  for (int c = 0; c < 3; ++c) {
    const float mean = config.do_normalize ? config.image_mean[static_cast<size_t>(c)] : 0.f;
    const float std = config.do_normalize ? config.image_std[static_cast<size_t>(c)] : 1.f;
    for (int64_t y = 0; y < out_h; ++y)
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t sy = y + top, sx = x + left;
        const bool inside = sy >= 0 && sy < image.height && sx >= 0 && sx < image.width;
        // Rescaled in double then stored as f32, normalized in f32: transformers' order and precision.
        const auto v = static_cast<float>((inside ? image.at(sx, sy, c) : 0) * scale);
        px[(c * out_h + y) * out_w + x] = (v - mean) / std;
      }
  }
  return out;
}

}  // namespace strata::vision
