// runtime/formats/calibrated_quantize.cpp: quantize_calibrated. One layer at a time: its seven linear weights
// and two norms are widened to f32, smoothed (SmoothQuant or AWQ factors folded into the norm or up_proj),
// quantized, and kept as compressed-tensors tensors; everything else is copied. A factor s folds exactly:
// norm_j / s_j feeds W[:, j] s_j (scale_columns), and up's row j / s_j feeds down[:, j] s_j (divide_rows).
#include "runtime/formats/calibrated_quantize.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include "runtime/backend.h"
#include "runtime/calibration.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/safetensors.h"
#include "runtime/fp8_kv.h"
#include "runtime/log.h"
#include "runtime/models/model_description.h"
#include "runtime/tokenizer/tokenizer.h"

namespace strata {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr int kAwqGrid = 20;

struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
  float* row(int64_t r) { return v.data() + r * cols; }
  const float* row(int64_t r) const { return v.data() + r * cols; }
};

std::vector<float> read_f32(const Checkpoint& ckpt, const std::string& name) {
  const Tensor t = ckpt.tensor(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const auto* src = static_cast<const uint16_t*>(t.raw());
  switch (t.dtype()) {
    case DType::kF32:
      std::memcpy(out.data(), t.raw(), out.size() * 4);
      break;
    case DType::kF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = f16_to_f32(src[i]);
      break;
    case DType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(src[i]);
      break;
    default:
      STRATA_THROW(ErrorKind::kInternal, "read_f32 on ", dtype_name(t.dtype()));
  }
  return out;
}

Matrix read_matrix(const Checkpoint& ckpt, const std::string& name) {
  const TensorEntry& e = ckpt.entry(name);
  return Matrix{e.shape[0], e.shape[1], read_f32(ckpt, name)};
}

// A host tensor of `values` in `dtype` (f32/f16/bf16), shaped `shape`.
Tensor encode_float(const std::vector<float>& values, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* h = static_cast<uint16_t*>(t.raw());
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32)
      t.data<float>()[i] = values[i];
    else if (dtype == DType::kF16)
      h[i] = f32_to_f16(values[i]);
    else
      h[i] = f32_to_bf16(values[i]);
  }
  return t;
}

// W[:, j] *= s[j] for each matrix; the layer before divides its output channel j by s[j].
void scale_columns(Matrix& w, const std::vector<float>& s) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t j = 0; j < w.cols; ++j) w.row(r)[j] *= s[static_cast<size_t>(j)];
}
void divide_rows(Matrix& w, const std::vector<float>& s) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t j = 0; j < w.cols; ++j) w.row(r)[j] /= s[static_cast<size_t>(r)];
}

// max_r |W[r][j]| over every matrix reading the input.
std::vector<float> column_max(const std::vector<Matrix*>& ws) {
  std::vector<float> m(static_cast<size_t>(ws.front()->cols), 0.f);
  for (const Matrix* w : ws)
    for (int64_t r = 0; r < w->rows; ++r)
      for (int64_t j = 0; j < w->cols; ++j)
        m[static_cast<size_t>(j)] = std::max(m[static_cast<size_t>(j)], std::fabs(w->row(r)[j]));
  return m;
}

std::vector<float> smoothquant_factors(const ChannelStats& x, const std::vector<Matrix*>& ws, float alpha) {
  const std::vector<float> wmax = column_max(ws);
  std::vector<float> s(wmax.size(), 1.f);
  for (size_t j = 0; j < s.size(); ++j)
    if (x.max_abs[j] > 0 && wmax[j] > 0)
      s[j] = std::clamp(std::pow(x.max_abs[j], alpha) / std::pow(wmax[j], 1.f - alpha), 1e-5f, 1e5f);
  return s;
}

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

// The clipping search of int4 groups: the scale shrinks from the group's extreme in kClipSteps steps of
// kClipStep (down to 0.625 of it), clipping the outliers to bring the other weights onto finer codes.
constexpr int kClipSteps = 16;
constexpr float kClipStep = 0.025f;

// What a group's rounding error costs the layer's output: with d the group's weight errors (one output row),
// the squared output error over the sampled input rows is d^T G d, G = X_g^T X_g / rows for the group's input
// columns X_g (as AWQ's clipping search measures it). gram holds one g x g matrix per group; without a sample
// (no calibration text) G is the identity: plain squared weight error.
struct ClipObjective {
  int64_t group = 0;
  std::vector<double> gram;  // [groups][g][g]; empty: identity
};

// Group-wise symmetric int4, codes -8..7 with a positive scale per group (an f16 value). Without `clip` the
// group's largest-magnitude weight lands exactly on a code: on -8 (scale max/8) when it is negative, on +7
// (scale max/7) when positive, as ggml's q4_0 keeps its extreme exact; rounding it by half a step costs the
// most important weight the most. With `clip` each group takes the clipped scale, from that one down, whose
// output error (ClipObjective) is least. codes [rows * cols] and scales [rows * groups]; group 0 = per row.
void quantize_int4(const Matrix& w, int64_t group, std::vector<int8_t>* codes, std::vector<float>& scales,
                   const ClipObjective* clip = nullptr) {
  const int64_t g = group > 0 ? group : w.cols, groups = w.cols / g;
  scales.assign(static_cast<size_t>(w.rows * groups), 0.f);
  if (codes != nullptr) codes->assign(static_cast<size_t>(w.rows * w.cols), 0);
  const auto output_error = [&](const float* x, int64_t b, float s, std::vector<double>& d) {
    for (int64_t i = 0; i < g; ++i)
      d[static_cast<size_t>(i)] = x[i] - s * std::clamp(std::nearbyint(x[i] / s), -8.f, 7.f);
    double err = 0;
    if (clip->gram.empty()) {
      for (double v : d) err += v * v;
      return err;
    }
    const double* G = clip->gram.data() + b * g * g;
    for (int64_t i = 0; i < g; ++i) {
      double row = 0;
      for (int64_t j = 0; j < g; ++j) row += G[i * g + j] * d[static_cast<size_t>(j)];
      err += d[static_cast<size_t>(i)] * row;
    }
    return err;
  };
#pragma omp parallel for schedule(dynamic, 16) if (clip != nullptr)
  for (int64_t r = 0; r < w.rows; ++r) {
    std::vector<double> d(static_cast<size_t>(g));
    for (int64_t b = 0; b < groups; ++b) {
      const float* x = w.row(r) + b * g;
      float extreme = 0;
      for (int64_t i = 0; i < g; ++i)
        if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
      const float full = extreme < 0 ? -extreme / 8.f : extreme / 7.f;
      float s = f16_round(full);
      if (clip != nullptr && s > 0) {
        double best = output_error(x, b, s, d);
        for (int k = 1; k < kClipSteps; ++k) {
          const float clipped = f16_round(full * (1.f - kClipStep * static_cast<float>(k)));
          if (clipped <= 0) break;
          if (const double err = output_error(x, b, clipped, d); err < best) best = err, s = clipped;
        }
      }
      scales[static_cast<size_t>(r * groups + b)] = s;
      if (codes == nullptr || s == 0) continue;
      for (int64_t i = 0; i < g; ++i)
        (*codes)[static_cast<size_t>(r * w.cols + b * g + i)] =
            static_cast<int8_t>(std::clamp(std::nearbyint(x[i] / s), -8.f, 7.f));
    }
  }
}

// The int4 layer's weights as the model sees them after folding: dequant(quant(W s)) / s.
Matrix fake_int4(const Matrix& w, const std::vector<float>& s, int64_t group) {
  Matrix scaled = w;
  scale_columns(scaled, s);
  std::vector<int8_t> codes;
  std::vector<float> scales;
  quantize_int4(scaled, group, &codes, scales);
  const int64_t g = group > 0 ? group : w.cols, groups = w.cols / g;
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t j = 0; j < w.cols; ++j)
      scaled.row(r)[j] = static_cast<float>(codes[static_cast<size_t>(r * w.cols + j)]) *
                         scales[static_cast<size_t>(r * groups + j / g)] / s[static_cast<size_t>(j)];
  return scaled;
}

// sum over the sampled rows of |X W^T|^2 differences, with the CPU backend's matmul.
double output_error(Backend& cpu, const Tensor& x, const Matrix& w, const Tensor& reference) {
  Tensor wt = Tensor::view(const_cast<float*>(w.v.data()), {w.rows, w.cols}, DType::kF32);
  Tensor y = Tensor::empty({x.dim(0), w.rows}, DType::kF32);
  cpu.matmul(x, wt, nullptr, y);
  double err = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double d = static_cast<double>(y.data<float>()[i]) - reference.data<float>()[i];
    err += d * d;
  }
  return err;
}

// The clipping search's objective for one linear input: per group of input columns, the Gram matrix of the
// sampled rows divided by the AWQ factors the columns were scaled by (the weights were multiplied by them, so
// the input the quantized weights see is x / s). No sample: the identity.
ClipObjective clip_objective(const ChannelStats& x, const std::vector<float>* s, int64_t cols, int64_t group) {
  ClipObjective o;
  o.group = group > 0 ? group : cols;
  if (x.sample_rows == 0) return o;
  const int64_t g = o.group, groups = cols / g;
  o.gram.assign(static_cast<size_t>(groups * g * g), 0.0);
  std::vector<double> v(static_cast<size_t>(cols));
  for (int64_t t = 0; t < x.sample_rows; ++t) {
    for (int64_t j = 0; j < cols; ++j) {
      const float factor = s != nullptr ? (*s)[static_cast<size_t>(j)] : 1.f;
      v[static_cast<size_t>(j)] = x.sample[static_cast<size_t>(t * cols + j)] / factor;
    }
#pragma omp parallel for
    for (int64_t b = 0; b < groups; ++b) {
      double* G = o.gram.data() + b * g * g;
      const double* vb = v.data() + b * g;
      for (int64_t i = 0; i < g; ++i)
        for (int64_t j = 0; j < g; ++j) G[i * g + j] += vb[i] * vb[j];
    }
  }
  for (double& e : o.gram) e /= static_cast<double>(x.sample_rows);
  return o;
}

struct AwqChoice {
  std::vector<float> s;
  float exponent = 0;
  double error = 0, plain_error = 0;  // at the chosen exponent and at a = 0 (no scaling)
};

AwqChoice awq_factors(Backend& cpu, const ChannelStats& x, const std::vector<Matrix*>& ws, int64_t group) {
  Tensor xs = Tensor::view(const_cast<float*>(x.sample.data()), {x.sample_rows, x.channels}, DType::kF32);
  std::vector<Tensor> refs;
  for (const Matrix* w : ws) {
    Tensor y = Tensor::empty({x.sample_rows, w->rows}, DType::kF32);
    cpu.matmul(xs, Tensor::view(const_cast<float*>(w->v.data()), {w->rows, w->cols}, DType::kF32), nullptr, y);
    refs.push_back(std::move(y));
  }
  std::vector<float> mean(static_cast<size_t>(x.channels));
  for (size_t j = 0; j < mean.size(); ++j)
    mean[j] = std::max(static_cast<float>(x.sum_abs[j] / static_cast<double>(std::max<int64_t>(1, x.mean_rows))), 1e-6f);
  AwqChoice best;
  for (int i = 0; i < kAwqGrid; ++i) {
    const float a = static_cast<float>(i) / kAwqGrid;
    std::vector<float> s(mean.size());
    for (size_t j = 0; j < s.size(); ++j) s[j] = std::pow(mean[j], a);
    // Centre the factors (geometric mean of the extremes = 1) so the weights keep their magnitude.
    const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
    const float centre = std::sqrt(*lo * *hi);
    for (float& v : s) v = std::clamp(v / centre, 1e-4f, 1e4f);
    double err = 0;
    for (size_t k = 0; k < ws.size(); ++k) err += output_error(cpu, xs, fake_int4(*ws[k], s, group), refs[k]);
    if (i == 0) best.plain_error = err;
    if (i == 0 || err < best.error) best = AwqChoice{s, a, err, best.plain_error};
  }
  return best;
}

json::object quant_args(int bits, const char* type, const char* strategy, std::optional<int64_t> group, bool dynamic) {
  json::object a;
  a["num_bits"] = bits;
  a["type"] = type;
  a["symmetric"] = true;
  a["group_size"] = group ? json::value(*group) : json::value(nullptr);
  a["strategy"] = strategy;
  a["block_structure"] = nullptr;
  a["dynamic"] = dynamic;
  a["actorder"] = nullptr;
  a["observer"] = dynamic ? json::value(nullptr) : json::value("minmax");
  a["observer_kwargs"] = json::object{};
  return a;
}

json::object quantization_config(CalibratedType type, const QuantizeOptions& o) {
  json::object group;
  group["targets"] = json::array{"Linear"};
  group["output_activations"] = nullptr;
  const char* format = "int-quantized";
  if (type == CalibratedType::kW8A8Int8) {
    group["weights"] = quant_args(8, "int", "channel", std::nullopt, false);
    group["input_activations"] = quant_args(8, "int", "token", std::nullopt, true);
  } else if (type == CalibratedType::kFp8) {
    format = "float-quantized";
    group["weights"] = quant_args(8, "float", "channel", std::nullopt, false);
    group["input_activations"] = o.static_activations ? quant_args(8, "float", "tensor", std::nullopt, false)
                                                      : quant_args(8, "float", "token", std::nullopt, true);
  } else {
    format = "pack-quantized";
    group["weights"] = o.group_size > 0 ? quant_args(4, "int", "group", o.group_size, false)
                                        : quant_args(4, "int", "channel", std::nullopt, false);
    group["input_activations"] = nullptr;
  }
  group["format"] = format;
  json::object q;
  q["quant_method"] = "compressed-tensors";
  q["format"] = format;
  q["quantization_status"] = "compressed";
  q["config_groups"] = json::object{{"group_0", group}};
  q["ignore"] = json::array{"lm_head"};
  q["kv_cache_scheme"] = nullptr;
  q["global_compression_ratio"] = nullptr;
  q["sparsity_config"] = json::object{};
  return q;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "cannot read the calibration file '", path,
                    "' (--calibration): give a text file the model is run on to measure its activations");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The linear layers of layer l: canonical suffixes in file order, and which input each reads.
struct LinearSlot {
  const char* suffix;
  LinearInput input;
};
constexpr LinearSlot kLinears[] = {
    {"attn_q", LinearInput::kAttnIn},       {"attn_k", LinearInput::kAttnIn},  {"attn_v", LinearInput::kAttnIn},
    {"attn_output", LinearInput::kAttnOut}, {"ffn_gate", LinearInput::kFfnIn}, {"ffn_up", LinearInput::kFfnIn},
    {"ffn_down", LinearInput::kFfnOut},
};

std::string blk(int64_t l, const char* suffix) { return "blk." + std::to_string(l) + "." + suffix + ".weight"; }

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // Hugging Face name -> tensor, in file order

// int8 codes with one scale per output channel, an f16 value so strata keeps the layer as q8_0 exactly.
void append_int8(const Matrix& m, const std::string& base, NamedTensors& out) {
  Tensor codes = Tensor::empty({m.rows, m.cols}, DType::kI8), scales = Tensor::empty({m.rows, 1}, DType::kF32);
  for (int64_t r = 0; r < m.rows; ++r) {
    float mx = 0;
    for (int64_t j = 0; j < m.cols; ++j) mx = std::max(mx, std::fabs(m.row(r)[j]));
    const float sc = mx > 0 ? f16_round(mx / 127.f) : 1.f;
    scales.data<float>()[r] = sc;
    for (int64_t j = 0; j < m.cols; ++j)
      codes.data<int8_t>()[r * m.cols + j] =
          static_cast<int8_t>(std::clamp(std::nearbyint(m.row(r)[j] / sc), -128.f, 127.f));
  }
  out.emplace_back(base + ".weight", codes);
  out.emplace_back(base + ".weight_scale", scales);
}

// e4m3 codes with one f32 scale per output channel (max |w| / 448); a static input_scale when given.
void append_fp8(const Matrix& m, const std::string& base, std::optional<float> input_amax, NamedTensors& out) {
  Tensor codes = Tensor::empty({m.rows, m.cols}, DType::kF8_E4M3), scales = Tensor::empty({m.rows, 1}, DType::kF32);
  for (int64_t r = 0; r < m.rows; ++r) {
    float mx = 0;
    for (int64_t j = 0; j < m.cols; ++j) mx = std::max(mx, std::fabs(m.row(r)[j]));
    const float sc = mx > 0 ? mx / kE4m3Max : 1.f;
    scales.data<float>()[r] = sc;
    for (int64_t j = 0; j < m.cols; ++j)
      static_cast<uint8_t*>(codes.raw())[r * m.cols + j] = f32_to_e4m3(m.row(r)[j] / sc);
  }
  out.emplace_back(base + ".weight", codes);
  out.emplace_back(base + ".weight_scale", scales);
  if (input_amax) {
    Tensor in = Tensor::empty({1}, DType::kF32);
    in.data<float>()[0] = *input_amax > 0 ? *input_amax / kE4m3Max : 1.f;
    out.emplace_back(base + ".input_scale", in);
  }
}

// compressed-tensors pack-quantized int4: codes + 8 packed 8 to an int32 (column 8w + i in bits 4i..4i+3),
// scales [rows, groups], and the unpacked shape.
void append_int4(const Matrix& m, const std::string& base, int64_t group, const ClipObjective* clip,
                 NamedTensors& out) {
  std::vector<int8_t> codes;
  std::vector<float> sc;
  quantize_int4(m, group, &codes, sc, clip);
  const int64_t groups = group > 0 ? m.cols / group : 1, words = (m.cols + 7) / 8;
  Tensor packed = Tensor::zeros({m.rows, words}, DType::kI32), scales = Tensor::empty({m.rows, groups}, DType::kF32),
         shape = Tensor::empty({2}, DType::kI64);
  auto* word = reinterpret_cast<uint32_t*>(packed.raw());
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t j = 0; j < m.cols; ++j)
      word[r * words + j / 8] |= static_cast<uint32_t>(codes[static_cast<size_t>(r * m.cols + j)] + 8) << (4 * (j % 8));
  std::copy(sc.begin(), sc.end(), scales.data<float>());
  shape.data<int64_t>()[0] = m.rows;
  shape.data<int64_t>()[1] = m.cols;
  out.emplace_back(base + ".weight_packed", packed);
  out.emplace_back(base + ".weight_scale", scales);
  out.emplace_back(base + ".weight_shape", shape);
}

// The source must be a dense Llama-family Hugging Face directory of float weights, and a w4a16 group must divide
// every linear layer's columns.
void check_source(const Checkpoint& ckpt, const QuantizeOptions& o, CalibratedType type) {
  const ModelConfig& config = ckpt.config();
  STRATA_CHECK(!config.moe.enabled(), o.model, ": a ", config.arch,
               " mixture-of-experts model; the calibrated types "
               "handle dense Llama-family models (llama, mistral, qwen2)");
  for (const TensorEntry& e : ckpt.entries())
    STRATA_CHECK(e.dtype == DType::kF32 || e.dtype == DType::kF16 || e.dtype == DType::kBF16, o.model, ": tensor '",
                 canonical_to_hf_name(e.name, config.arch), "' is ", dtype_name(e.dtype), "; --type ", o.type,
                 " quantizes from f32, f16 or bf16 weights (an already-quantized checkpoint would add both errors)");
  if (type != CalibratedType::kW4A16) return;
  int64_t gcd = 0;
  for (int64_t l = 0; l < config.n_layers; ++l)
    for (const LinearSlot& s : kLinears) gcd = std::gcd(gcd, ckpt.entry(blk(l, s.suffix)).shape[1]);
  for (int64_t l = 0; l < config.n_layers; ++l)
    for (const LinearSlot& s : kLinears) {
      const int64_t cols = ckpt.entry(blk(l, s.suffix)).shape[1];
      STRATA_CHECK(o.group_size == 0 || cols % o.group_size == 0, "--group-size ", o.group_size,
                   " does not divide the ", cols, " input columns of '",
                   canonical_to_hf_name(blk(l, s.suffix), config.arch), "'; ",
                   gcd % 32 == 0 ? cat("choose a divisor of ", gcd,
                                       ", every layer's column count (32 or more keeps "
                                       "strata's q4_0 kernels), or 0 (one scale per row)")
                                 : cat("the layers' column counts share only a factor of ", gcd,
                                       ", so use --group-size 0 (one scale per row)"));
    }
}

CalibrationStats calibrate(const Checkpoint& ckpt, const QuantizeOptions& o, CalibratedType type) {
  STRATA_CHECK(ckpt.tokenizer().has_value(), o.model, ": no tokenizer to read the calibration text with");
  std::vector<int32_t> ids = Tokenizer::create(*ckpt.tokenizer())->encode(read_text(o.calibration), true);
  STRATA_CHECK(ids.size() >= 2, "the calibration file '", o.calibration, "' holds ", ids.size(),
               " tokens; give a file of real text (a few thousand tokens or more)");
  if (o.calibration_tokens > 0 && static_cast<int64_t>(ids.size()) > o.calibration_tokens)
    ids.resize(static_cast<size_t>(o.calibration_tokens));
  CalibrationOptions co;
  co.context = o.calibration_context;
  co.sample_rows = type == CalibratedType::kW4A16 ? o.awq_rows : 0;
  co.threads = o.threads;
  LOG_INFO("quantize: calibrating on ", ids.size(), " tokens of ", o.calibration);
  return collect_activation_stats(ckpt, ids, co);
}

// config.json (the source's, with the quantization_config) and the tokenizer files beside the weights.
void write_side_files(const QuantizeOptions& o, CalibratedType type) {
  const fs::path src(o.model), dst(o.out);
  std::ifstream in(src / "config.json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  boost::system::error_code ec;
  json::value cfg = json::parse(buffer.str(), ec);
  STRATA_CHECK_KIND(ErrorKind::kFormat, !ec && cfg.is_object(), (src / "config.json").string(),
                    " is not a JSON object");
  if (!o.smooth_only) cfg.as_object()["quantization_config"] = quantization_config(type, o);
  std::ofstream cf(dst / "config.json");
  cf << json::serialize(cfg) << "\n";
  STRATA_CHECK_KIND(ErrorKind::kIo, cf.good(), "cannot write ", (dst / "config.json").string());
  for (const char* f :
       {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
        "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja"})
    if (fs::exists(src / f)) fs::copy_file(src / f, dst / f, fs::copy_options::overwrite_existing);
}

}  // namespace

std::optional<CalibratedType> calibrated_type(const std::string& type) {
  std::string t = type;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "w8a8-int8") return CalibratedType::kW8A8Int8;
  if (t == "fp8") return CalibratedType::kFp8;
  if (t == "w4a16") return CalibratedType::kW4A16;
  return std::nullopt;
}

std::string calibrated_type_names() { return "w8a8-int8, fp8, w4a16"; }

QuantizeResult quantize_calibrated(const QuantizeOptions& o, QuantizeProgress* progress) {
  const std::optional<CalibratedType> maybe_type = calibrated_type(o.type);
  STRATA_CHECK(maybe_type.has_value(), "'", o.type, "' is not a calibrated type (", calibrated_type_names(), ")");
  const CalibratedType type = *maybe_type;
  STRATA_CHECK(!o.out.empty(), "quantize --type ", o.type, " needs an output directory (--out DIR)");
  STRATA_CHECK(fs::path(o.out).extension() != ".gguf", "--type ", o.type,
               " writes a Hugging Face directory (compressed-tensors safetensors), not GGUF: give --out a directory");
  std::error_code ec;
  STRATA_CHECK(!fs::exists(o.model) || !fs::equivalent(o.model, o.out, ec), "the output '", o.out,
               "' is the source model; write to another directory");
  STRATA_CHECK(o.force || !fs::exists(o.out), "the output '", o.out,
               "' exists; pass --force to overwrite it or choose another path");
  const bool needs_text = (type != CalibratedType::kFp8 && o.smoothing) || o.static_activations;
  STRATA_CHECK(!needs_text || !o.calibration.empty(), "--type ", o.type,
               o.static_activations ? " with static activation scales" : "",
               " needs --calibration FILE.txt: text the unquantized model runs on to measure its activations");
  STRATA_CHECK(o.alpha >= 0 && o.alpha <= 1, "--alpha must lie in [0, 1], got ", o.alpha);
  STRATA_CHECK(o.group_size >= 0, "--group-size must be 0 (one scale per row) or a positive column count");
  if (needs_text) read_text(o.calibration);  // a bad path fails before the model is opened
  STRATA_CHECK(fs::is_directory(o.model) && fs::exists(fs::path(o.model) / "config.json"), o.model, ": --type ", o.type,
               " reads a Hugging Face directory (config.json + f32/f16/bf16 safetensors) and "
               "writes one; convert a GGUF source first (tools/reference/gguf_to_hf.py)");
  const std::unique_ptr<Checkpoint> ckpt = open_checkpoint(o.model);
  const ModelConfig& config = ckpt->config();
  check_source(*ckpt, o, type);
  // w4a16's clipping search measures output error on the calibration rows when a text is given, even unsmoothed.
  const bool has_stats = needs_text || (type == CalibratedType::kW4A16 && o.clip_search && !o.calibration.empty());
  const CalibrationStats stats = has_stats ? calibrate(*ckpt, o, type) : CalibrationStats{};
  const ChannelStats no_stats;

  QuantizeResult result;
  NamedTensors out;
  const auto hf = [&](const std::string& canonical) { return canonical_to_hf_name(canonical, config.arch); };
  const std::unique_ptr<Backend> cpu = make_cpu_backend(o.threads);
  if (progress != nullptr) {
    int64_t total = 0;
    for (int64_t l = 0; l < config.n_layers; ++l)
      for (const LinearSlot& s : kLinears) total += shape_numel(ckpt->entry(blk(l, s.suffix)).shape);
    progress->elements_total = total;
    progress->tensors_total = static_cast<int>(ckpt->entries().size());
  }
  std::set<std::string> written;
  const auto copy = [&](const std::string& name) {
    if (written.insert(name).second) out.emplace_back(hf(name), ckpt->tensor(name));
  };
  copy("token_embd.weight");
  double awq_plain = 0, awq_chosen = 0;
  for (int64_t l = 0; l < config.n_layers; ++l) {
    std::map<std::string, Matrix> w;
    for (const LinearSlot& s : kLinears) w[s.suffix] = read_matrix(*ckpt, blk(l, s.suffix));
    std::vector<float> attn_norm = read_f32(*ckpt, blk(l, "attn_norm")), ffn_norm = read_f32(*ckpt, blk(l, "ffn_norm"));
    std::map<LinearInput, std::vector<float>> folded;  // the factors each input's columns were scaled by
    if (type != CalibratedType::kFp8 && o.smoothing) {  // factors per input, folded: the same function
      const auto factors = [&](LinearInput in, const std::vector<Matrix*>& ws) {
        if (type == CalibratedType::kW8A8Int8) return smoothquant_factors(stats.at(l, in), ws, o.alpha);
        const AwqChoice c = awq_factors(*cpu, stats.at(l, in), ws, o.group_size);
        awq_plain += c.plain_error;
        awq_chosen += c.error;
        LOG_DEBUG("quantize: ", calibration_key(l, in), ": AWQ exponent ", c.exponent, ", output error ", c.error, " (",
                  c.plain_error, " unscaled)");
        return c.s;
      };
      const std::vector<Matrix*> qkv = {&w["attn_q"], &w["attn_k"], &w["attn_v"]},
                                 gate_up = {&w["ffn_gate"], &w["ffn_up"]};
      const std::vector<float> s_qkv = factors(LinearInput::kAttnIn, qkv);
      for (Matrix* m : qkv) scale_columns(*m, s_qkv);
      for (size_t j = 0; j < attn_norm.size(); ++j) attn_norm[j] /= s_qkv[j];
      const std::vector<float> s_gu = factors(LinearInput::kFfnIn, gate_up);
      for (Matrix* m : gate_up) scale_columns(*m, s_gu);
      for (size_t j = 0; j < ffn_norm.size(); ++j) ffn_norm[j] /= s_gu[j];
      // down_proj reads silu(gate) * up, linear in up: its factor divides up's rows.
      const std::vector<float> s_down = factors(LinearInput::kFfnOut, {&w["ffn_down"]});
      scale_columns(w["ffn_down"], s_down);
      divide_rows(w["ffn_up"], s_down);
      folded = {{LinearInput::kAttnIn, s_qkv}, {LinearInput::kFfnIn, s_gu}, {LinearInput::kFfnOut, s_down}};
    }
    const DType norm_dtype = ckpt->entry(blk(l, "attn_norm")).dtype;
    const auto norm = [&](const char* suffix, const std::vector<float>& v) {
      out.emplace_back(hf(blk(l, suffix)), encode_float(v, {static_cast<int64_t>(v.size())}, norm_dtype));
      written.insert(blk(l, suffix));
    };
    norm("attn_norm", attn_norm);
    for (const LinearSlot& s : kLinears) {
      const std::string name = blk(l, s.suffix), base = hf(name).substr(0, hf(name).size() - 7);  // no ".weight"
      const Matrix& m = w[s.suffix];
      const TensorEntry& entry = ckpt->entry(name);
      if (s.input == LinearInput::kFfnIn && !written.count(blk(l, "ffn_norm"))) norm("ffn_norm", ffn_norm);
      written.insert(name);
      DType as = entry.dtype;
      if (o.smooth_only) {
        out.emplace_back(base + ".weight", encode_float(m.v, entry.shape, entry.dtype));
      } else if (type == CalibratedType::kW8A8Int8) {
        append_int8(m, base, out), as = DType::kI8;
      } else if (type == CalibratedType::kFp8) {
        std::optional<float> amax;
        if (o.static_activations) amax = stats.at(l, s.input).max_abs_all();
        append_fp8(m, base, amax, out), as = DType::kF8_E4M3;
      } else {
        std::optional<ClipObjective> clip;
        if (o.clip_search) {
          const auto f = folded.find(s.input);
          clip = clip_objective(has_stats ? stats.at(l, s.input) : no_stats, f != folded.end() ? &f->second : nullptr,
                                m.cols, o.group_size);
        }
        append_int4(m, base, o.group_size, clip ? &*clip : nullptr, out), as = DType::kI32;  // int4, 8 per int32
      }
      result.tensors.push_back({name, entry.dtype, as, entry.shape, false});
      if (progress != nullptr) progress->elements_done += shape_numel(entry.shape);
    }
  }
  for (const TensorEntry& e : ckpt->entries()) {  // biases, the final norm, the head: as they are
    copy(e.name);
    result.source_bytes += e.nbytes;
    result.parameters += shape_numel(e.shape);
  }

  if (!o.smoothing && type != CalibratedType::kFp8)
    result.notes.push_back("no smoothing (--no-smoothing): plain round-to-nearest weights");
  else if (type == CalibratedType::kW8A8Int8)
    result.notes.push_back(cat("SmoothQuant (alpha ", o.alpha,
                               ") folded into input_layernorm (q/k/v), "
                               "post_attention_layernorm (gate/up) and up_proj's rows (down_proj) in ",
                               config.n_layers,
                               " layers; o_proj is not smoothed (its factor would have to fold into v_proj across "
                               "shared KV heads)"));
  else if (type == CalibratedType::kW4A16)
    result.notes.push_back(cat("AWQ scales searched on ", o.awq_rows,
                               " sampled rows per input and folded like "
                               "SmoothQuant's (o_proj not scaled); output error on those rows ",
                               awq_plain > 0 ? awq_chosen / awq_plain : 1.0, "x that of plain group-wise int4"));
  if (type == CalibratedType::kW4A16 && o.clip_search)
    result.notes.push_back(has_stats ? "group scales clipped where that lowers the layer's output error on the sampled "
                                       "rows (--clip-search)"
                                     : "group scales clipped where that lowers the squared weight error (--clip-search "
                                       "without --calibration: every column weighs alike)");
  if (type == CalibratedType::kFp8)
    result.notes.push_back(o.static_activations ? "static per-tensor activation scales (calibration max / 448)"
                                                : "dynamic per-token activation scales");

  fs::create_directories(o.out);
  fs::remove(fs::path(o.out) / "model.safetensors.index.json");  // a --force over a sharded checkpoint
  write_safetensors((fs::path(o.out) / "model.safetensors").string(), out, {{"format", "pt"}});
  write_side_files(o, type);
  result.output_bytes = static_cast<uint64_t>(fs::file_size(fs::path(o.out) / "model.safetensors"));
  return result;
}

}  // namespace strata
