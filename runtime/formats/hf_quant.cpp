// runtime/formats/hf_quant.cpp: quantization_config parsing and the transcoding of GPTQ, AWQ, FP8 and
// compressed-tensors layers into strata's block types (the mapping is in hf_quant.h). Every integer format
// is first unpacked into one form, y[n][k] = scale[n][group(k)] * d[n][k] with d = code - zero an integer;
// planning picks the smallest block type that holds every d the zero points allow, and one emitter writes it.
#include "runtime/formats/hf_quant.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/quant_blocks.h"

namespace strata {
namespace json = boost::json;

namespace {

constexpr const char* kSupported =
    "strata loads gptq (4 or 8 bits), awq (4-bit GEMM), fp8 (e4m3) and compressed-tensors (pack-quantized int4/int8, "
    "int-quantized int8, float-quantized fp8)";

// ---- config.json fields ------------------------------------------------------------------------------

struct Fields {
  const json::object& obj;
  const std::string& source;

  const json::value* find(const char* key) const {
    const json::value* v = obj.if_contains(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }
  int64_t integer(const char* key, int64_t fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_int64(), source, ": '", key, "' must be an integer, got ",
                      json::serialize(*v));
    return v->get_int64();
  }
  bool boolean(const char* key, bool fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_bool(), source, ": '", key, "' must be true or false");
    return v->get_bool();
  }
  std::string string(const char* key, const char* fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_string(), source, ": '", key, "' must be a string");
    std::string s(v->as_string());
    for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return s;
  }
};

void parse_compressed_tensors(const Fields& f, HfQuantization& q) {
  const std::string top_format = f.string("format", "");
  const json::value* groups = f.find("config_groups");
  STRATA_CHECK_KIND(ErrorKind::kFormat, groups != nullptr && groups->is_object() && !groups->as_object().empty(),
                    f.source, ": compressed-tensors needs a non-empty 'config_groups' object");
  bool first = true;
  for (const auto& kv : groups->as_object()) {
    const std::string where = cat(f.source, " config_groups.", std::string(kv.key()));
    STRATA_CHECK_KIND(ErrorKind::kFormat, kv.value().is_object(), where, ": must be an object");
    const Fields g{kv.value().as_object(), where};
    const std::string format = g.string("format", top_format.c_str());
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      format == "pack-quantized" || format == "int-quantized" || format == "float-quantized" ||
                          format == "naive-quantized",
                      where, ": format '", format,
                      "' is not supported; strata reads pack-quantized, int-quantized, float-quantized and "
                      "naive-quantized compressed-tensors checkpoints");
    const json::value* w = g.find("weights");
    STRATA_CHECK_KIND(ErrorKind::kFormat, w != nullptr && w->is_object(), where, ": needs a 'weights' object");
    const Fields wf{w->as_object(), where + ".weights"};
    const int bits = static_cast<int>(wf.integer("num_bits", 8));
    const std::string type = wf.string("type", "int");
    STRATA_CHECK_KIND(ErrorKind::kFormat, (type == "int" && (bits == 4 || bits == 8)) || (type == "float" && bits == 8),
                      where, ".weights: ", bits, "-bit ", type,
                      " weights are not supported; strata reads int4, int8 and float8 (e4m3)");
    bool static_inputs = false;
    if (const json::value* in = g.find("input_activations"); in != nullptr) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, in->is_object(), where, ": input_activations must be an object");
      static_inputs = !Fields{in->as_object(), where}.boolean("dynamic", false);
    }
    STRATA_CHECK_KIND(ErrorKind::kFormat, first || (bits == q.bits && (type == "float") == q.float_weights), where,
                      ": config groups with different weight types (", bits, "-bit ", type, " beside ", q.bits,
                      "-bit) are not supported");
    q.bits = bits;
    q.float_weights = type == "float";
    q.static_input_scales = q.static_input_scales || static_inputs;
    first = false;
  }
}

// ---- reading raw tensors -----------------------------------------------------------------------------

std::string describe(const std::string& name, const HfRawTensor& t) {
  return cat("'", name, "' in ", std::filesystem::path(t.file).filename().string());
}

float float_at(const HfRawTensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, t.data + i * 4, 4);
      return v;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, t.data + i * 2, 2);
      return f16_to_f32(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, t.data + i * 2, 2);
      return bf16_to_f32(h);
    }
    default: STRATA_THROW(ErrorKind::kInternal, "float_at on ", dtype_name(t.dtype));
  }
}

int64_t int_at(const HfRawTensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kI8: return static_cast<int8_t>(t.data[i]);
    case DType::kI32: {
      int32_t v;
      std::memcpy(&v, t.data + i * 4, 4);
      return v;
    }
    case DType::kI64: {
      int64_t v;
      std::memcpy(&v, t.data + i * 8, 8);
      return v;
    }
    default: STRATA_THROW(ErrorKind::kInternal, "int_at on ", dtype_name(t.dtype));
  }
}

// Rows (or columns) unpacked together, so each reads whole cache lines of the packed codes.
constexpr int64_t kBand = 16;

// Runs fn(begin, end) over [0, n) split into `threads` contiguous ranges, the first on the calling thread. Each
// index is written by exactly one range, so the bytes are those of one thread. The first exception is rethrown.
void for_ranges(int threads, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t parts = std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1));
  if (parts == 1) return fn(0, n);
  std::exception_ptr first;
  std::mutex mutex;
  auto run = [&](int64_t p) {
    try {
      fn(n * p / parts, n * (p + 1) / parts);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mutex);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int64_t p = 1; p < parts; ++p) pool.emplace_back(run, p);
  run(0);
  for (std::thread& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

class Module {
 public:
  Module(std::map<std::string, HfRawTensor>& all, std::string prefix) : all_(all), prefix_(std::move(prefix)) {}

  const std::string& prefix() const { return prefix_; }
  bool has(const char* suffix) const { return all_.count(name(suffix)) != 0; }
  std::string name(const char* suffix) const { return cat(prefix_, ".", suffix); }
  // The tensor, checked for presence and dtype class; remembered for removal.
  const HfRawTensor& get(const char* suffix, std::initializer_list<DType> dtypes, const char* what) {
    const std::string n = name(suffix);
    auto it = all_.find(n);
    STRATA_CHECK_KIND(ErrorKind::kFormat, it != all_.end(), "quantized layer '", prefix_, "' has no tensor '", n,
                      "' (", what, ")");
    const HfRawTensor& t = it->second;
    std::string allowed;
    bool ok = false;
    for (DType d : dtypes) {
      ok = ok || t.dtype == d;
      allowed += cat(allowed.empty() ? "" : " or ", dtype_name(d));
    }
    STRATA_CHECK_KIND(ErrorKind::kFormat, ok, describe(n, t), " is ", dtype_name(t.dtype), "; ", what, " must be ",
                      allowed);
    used_.push_back(n);
    return t;
  }
  void expect_shape(const char* suffix, const Shape& want, const std::string& what) const {
    const std::string n = name(suffix);
    const HfRawTensor& t = all_.at(n);
    STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape == want, describe(n, t), " has shape ", shape_str(t.shape),
                      " but ", what, " needs ", shape_str(want));
  }
  void also_consume(const char* suffix) {
    if (has(suffix)) used_.push_back(name(suffix));
  }
  // Moves the tensors this layer read out of the map: the caller sees only the rest.
  std::map<std::string, HfRawTensor> take() {
    std::map<std::string, HfRawTensor> out;
    for (const std::string& n : used_)
      if (auto it = all_.find(n); it != all_.end()) out.insert(all_.extract(it));
    return out;
  }
  std::string file() const {
    for (const auto& n : used_) return std::filesystem::path(all_.at(n).file).filename().string();
    return "?";
  }

 private:
  std::map<std::string, HfRawTensor>& all_;
  std::string prefix_;
  std::vector<std::string> used_;
};

constexpr std::initializer_list<DType> kFloatTypes = {DType::kF32, DType::kF16, DType::kBF16};

// ---- the integer form and its emitter ----------------------------------------------------------------

// y[r][c] = scale[r][group[c]] * d[r][c]. Planning fills everything but d and (f16) scales; transcoding all.
struct IntLayer {
  int64_t rows = 0, cols = 0, groups = 0;
  int dmin = 0, dmax = 0;       // the range d can take: every code the bit width allows, minus the zero points
  bool permuted = false;        // act-order: g_idx does not follow the columns
  bool scales_f16 = true;       // every scale is an f16 value
  std::string scale_tensor;     // describe() of the scales, for messages
  std::string label;            // "<qweight> in <file> (GPTQ 4-bit)"
  std::vector<int16_t> d;       // [rows * cols]
  std::vector<float> scale;     // [rows * groups]
  std::vector<int32_t> group;   // [cols]
};

bool f16_exact(float s) { return std::isfinite(s) && f16_to_f32(f32_to_f16(s)) == s; }

// Whether each 32-column block lies inside one group (group[c] == c / size for one size that is a
// multiple of 32): then a block's scale is its group's.
bool blocks_follow_groups(const IntLayer& l) {
  if (l.cols % kQBlock != 0) return false;
  const int64_t size = l.cols / l.groups;
  if (size * l.groups != l.cols || size % kQBlock != 0) return false;
  for (int64_t c = 0; c < l.cols; ++c)
    if (l.group[static_cast<size_t>(c)] != c / size) return false;
  return true;
}

// The smallest type that holds the layer exactly; `why` says why an f32 one could not stay quantized.
DType choose_type(const IntLayer& l, std::string& why) {
  const bool blocks = !l.permuted && blocks_follow_groups(l);
  if (blocks && l.scales_f16) {
    if (l.dmin >= -8 && l.dmax <= 7) return DType::kQ4_0;
    if (l.dmin >= -16 && l.dmax <= 15) return DType::kQ5_0;
    if (l.dmin >= -128 && l.dmax <= 127) return DType::kQ8_0;
  }
  why = l.permuted ? "act-order g_idx permutes the groups" : !l.scales_f16 ? "its scales are not f16 values"
        : !blocks ? cat("its groups of ", l.groups > 0 ? l.cols / l.groups : l.cols,
                        " columns do not hold whole 32-column blocks")
                  : cat("its codes minus zero points can leave int8 (", l.dmin, " to ", l.dmax, ")");
  return DType::kF32;
}

void emit(const IntLayer& l, DType dt, uint8_t* out, int threads) {
  if (dt != DType::kF32)  // planning read f16 scales' dtype, not their values
    for (size_t i = 0; i < l.scale.size(); ++i)
      STRATA_CHECK_KIND(ErrorKind::kFormat, std::isfinite(l.scale[i]), l.scale_tensor, ": scale ", i / l.groups,
                        ", group ", i % l.groups, " is ", l.scale[i], "; a quantized layer needs finite scales");
  const int64_t size = l.groups > 0 ? l.cols / l.groups : l.cols;
  for_ranges(threads, l.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int16_t* d = l.d.data() + r * l.cols;
      const float* s = l.scale.data() + r * l.groups;
      uint8_t* row = out + dtype_bytes(dt, r * l.cols);
      for (int64_t b = 0; dt != DType::kF32 && b < l.cols / kQBlock; ++b) {
        const int16_t* db = d + b * kQBlock;
        const uint16_t scale = f32_to_f16(s[b * kQBlock / size]);
        if (dt == DType::kQ4_0) {
          auto* blk = reinterpret_cast<BlockQ4_0*>(row) + b;
          blk->scale = scale;
          for (int i = 0; i < 16; ++i)
            blk->q[i] = static_cast<uint8_t>((db[i] + 8) | (db[i + 16] + 8) << 4);
        } else if (dt == DType::kQ5_0) {
          auto* blk = reinterpret_cast<BlockQ5_0*>(row) + b;
          blk->d = scale;
          uint32_t qh = 0;
          for (int i = 0; i < 16; ++i) {
            const int a = db[i] + 16, c = db[i + 16] + 16;
            blk->qs[i] = static_cast<uint8_t>((a & 15) | (c & 15) << 4);
            qh |= static_cast<uint32_t>(a >> 4) << i | static_cast<uint32_t>(c >> 4) << (i + 16);
          }
          std::memcpy(blk->qh, &qh, 4);
        } else {
          auto* blk = reinterpret_cast<BlockQ8_0*>(row) + b;
          blk->scale = scale;
          for (int i = 0; i < 32; ++i) blk->q[i] = static_cast<int8_t>(db[i]);
        }
      }
      if (dt == DType::kF32) {
        auto* y = reinterpret_cast<float*>(row);
        for (int64_t c = 0; c < l.cols; ++c) y[c] = s[l.group[static_cast<size_t>(c)]] * static_cast<float>(d[c]);
      }
    }
  });
}

// Reads a [groups, rows] (transposed) or [rows, groups] scale tensor into l.scale ([rows, groups]). Planning
// (codes == false) reads scales only to learn whether they are f16 values, which an f16 tensor's are (bar
// non-finite ones, which emit() refuses).
void read_scales(const Module& m, const char* suffix, const HfRawTensor& t, IntLayer& l, bool transposed, bool codes) {
  l.scale_tensor = describe(m.name(suffix), t);
  if (!codes && t.dtype == DType::kF16) return;
  l.scale.resize(static_cast<size_t>(l.rows * l.groups));
  for (int64_t r = 0; r < l.rows; ++r)
    for (int64_t g = 0; g < l.groups; ++g)
      l.scale[static_cast<size_t>(r * l.groups + g)] = float_at(t, transposed ? g * l.rows + r : r * l.groups + g);
  if (!codes) {
    l.scales_f16 = std::all_of(l.scale.begin(), l.scale.end(), f16_exact);
    std::vector<float>().swap(l.scale);
  }
}

// d = code - zero for codes in [lo, hi]: the range over every zero point.
void d_range(IntLayer& l, const std::vector<int>& zero, int lo, int hi) {
  const auto [zlo, zhi] = std::minmax_element(zero.begin(), zero.end());
  l.dmin = lo - (zero.empty() ? 0 : *zhi);
  l.dmax = hi - (zero.empty() ? 0 : *zlo);
}

int64_t group_count(const Module& m, int64_t cols, int64_t group_size, const std::string& source) {
  if (group_size == -1 || group_size == cols) return 1;
  STRATA_CHECK_KIND(ErrorKind::kFormat, group_size > 0 && cols % group_size == 0, "quantized layer '", m.prefix(),
                    "': group_size ", group_size, " (", source, ") does not divide its ", cols,
                    " input columns; strata needs groups that tile each row (or -1 for one group per row)");
  return cols / group_size;
}

// ---- GPTQ and AWQ ------------------------------------------------------------------------------------

IntLayer gptq(Module& m, const HfQuantization& q, bool codes, int threads) {
  const int bits = q.bits, pack = 32 / bits, mask = (1 << bits) - 1;
  const HfRawTensor& qweight = m.get("qweight", {DType::kI32}, "GPTQ packed codes");
  STRATA_CHECK_KIND(ErrorKind::kFormat, qweight.shape.size() == 2, describe(m.name("qweight"), qweight),
                    " must be 2-D [in / ", pack, ", out]");
  const int64_t cols = qweight.shape[0] * pack, rows = qweight.shape[1];
  IntLayer l;
  l.rows = rows, l.cols = cols;
  l.groups = group_count(m, cols, q.group_size, q.source);
  const HfRawTensor& scales = m.get("scales", kFloatTypes, "GPTQ scales");
  m.expect_shape("scales", {l.groups, rows}, cat("GPTQ with group_size ", q.group_size));
  const HfRawTensor& qzeros = m.get("qzeros", {DType::kI32}, "GPTQ packed zero points");
  m.expect_shape("qzeros", {l.groups, (rows + pack - 1) / pack}, cat(bits, "-bit GPTQ zero points"));
  read_scales(m, "scales", scales, l, true, codes);
  l.group.resize(static_cast<size_t>(cols));
  if (m.has("g_idx")) {
    const HfRawTensor& g_idx = m.get("g_idx", {DType::kI32, DType::kI64}, "GPTQ group index");
    m.expect_shape("g_idx", {cols}, "one group per input column");
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = int_at(g_idx, c);
      STRATA_CHECK_KIND(ErrorKind::kFormat, g >= 0 && g < l.groups, describe(m.name("g_idx"), g_idx), ": entry ", c,
                        " = ", g, " is outside the ", l.groups, " groups of the scales");
      l.group[static_cast<size_t>(c)] = static_cast<int32_t>(g);
      l.permuted = l.permuted || g != c * l.groups / cols;
    }
  } else {
    for (int64_t c = 0; c < cols; ++c) l.group[static_cast<size_t>(c)] = static_cast<int32_t>(c * l.groups / cols);
  }
  // Zero points [groups, rows]; v1 (AutoGPTQ's format) stores each minus one, gptq_v2 as is.
  std::vector<int> zero(static_cast<size_t>(l.groups * rows));
  const int64_t zcols = qzeros.shape[1];
  for (int64_t g = 0; g < l.groups; ++g)
    for (int64_t r = 0; r < rows; ++r) {
      const auto zword = static_cast<uint32_t>(int_at(qzeros, g * zcols + r / pack));
      zero[static_cast<size_t>(g * rows + r)] =
          (static_cast<int>(zword >> (bits * (r % pack))) & mask) + (q.gptq_v1 ? 1 : 0);
    }
  d_range(l, zero, 0, mask);
  l.label = cat(m.name("qweight"), " in ", m.file(), " (GPTQ ", bits, "-bit", q.gptq_v1 ? "" : " v2", ")");
  if (!codes) return l;
  l.d.resize(static_cast<size_t>(rows * cols));
  // Word j of output row r (qweight[j][r]) holds columns j*pack ... j*pack + pack - 1. Bands of 16 rows read
  // whole cache lines of qweight and write runs of d.
  const uint8_t* qw = qweight.data;
  int16_t* d = l.d.data();
  const int32_t* group = l.group.data();
  const int* zp = zero.data();
  for_ranges(threads, (rows + kBand - 1) / kBand, [=](int64_t b0, int64_t b1) {
    for (int64_t r0 = b0 * kBand; r0 < std::min(rows, b1 * kBand); r0 += kBand)
      for (int64_t j = 0; j < cols / pack; ++j)
        for (int64_t r = r0; r < std::min(rows, r0 + kBand); ++r) {
          uint32_t word;
          std::memcpy(&word, qw + (j * rows + r) * 4, 4);
          int16_t* dr = d + r * cols + j * pack;
          for (int k = 0; k < pack; ++k)
            dr[k] = static_cast<int16_t>((static_cast<int>(word >> (bits * k)) & mask) - zp[group[j * pack + k] * rows + r]);
        }
  });
  return l;
}

// AutoAWQ's GEMM packing: word j of a row holds columns 8j..8j+7, nibble i holding column 8j + kOrder[i].
constexpr int kAwqNibbleOfColumn[8] = {0, 4, 1, 5, 2, 6, 3, 7};

IntLayer awq(Module& m, const HfQuantization& q, bool codes, int threads) {
  const HfRawTensor& qweight = m.get("qweight", {DType::kI32}, "AWQ packed codes");
  STRATA_CHECK_KIND(ErrorKind::kFormat, qweight.shape.size() == 2, describe(m.name("qweight"), qweight),
                    " must be 2-D [in, out / 8]");
  const int64_t cols = qweight.shape[0], rows = qweight.shape[1] * 8;
  IntLayer l;
  l.rows = rows, l.cols = cols;
  l.groups = group_count(m, cols, q.group_size, q.source);
  const HfRawTensor& scales = m.get("scales", kFloatTypes, "AWQ scales");
  m.expect_shape("scales", {l.groups, rows}, cat("AWQ with group_size ", q.group_size));
  const HfRawTensor& qzeros = m.get("qzeros", {DType::kI32}, "AWQ packed zero points");
  m.expect_shape("qzeros", {l.groups, rows / 8}, "4-bit AWQ zero points");
  read_scales(m, "scales", scales, l, true, codes);
  l.group.resize(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) l.group[static_cast<size_t>(c)] = static_cast<int32_t>(c * l.groups / cols);
  const int64_t words = rows / 8;
  std::vector<int> zero(static_cast<size_t>(l.groups * rows));
  for (int64_t g = 0; g < l.groups; ++g)
    for (int64_t r = 0; r < rows; ++r) {
      const auto word = static_cast<uint32_t>(int_at(qzeros, g * words + r / 8));
      zero[static_cast<size_t>(g * rows + r)] = static_cast<int>(word >> (4 * kAwqNibbleOfColumn[r % 8])) & 15;
    }
  d_range(l, zero, 0, 15);
  l.label = cat(m.name("qweight"), " in ", m.file(), " (AWQ 4-bit GEMM)");
  if (!codes) return l;
  l.d.resize(static_cast<size_t>(rows * cols));
  // Word w of input column c (qweight[c][w]) holds output rows 8w ... 8w + 7. Bands of 16 columns write runs of d.
  const uint8_t* qw = qweight.data;
  int16_t* d = l.d.data();
  const int32_t* group = l.group.data();
  const int* zp = zero.data();
  for_ranges(threads, (cols + kBand - 1) / kBand, [=](int64_t b0, int64_t b1) {
    for (int64_t c0 = b0 * kBand; c0 < std::min(cols, b1 * kBand); c0 += kBand)
      for (int64_t w = 0; w < words; ++w)
        for (int64_t c = c0; c < std::min(cols, c0 + kBand); ++c) {
          uint32_t word;
          std::memcpy(&word, qw + (c * words + w) * 4, 4);
          const int* zc = zp + group[c] * rows;
          for (int i = 0; i < 8; ++i) {
            const int64_t r = w * 8 + i;
            d[r * cols + c] = static_cast<int16_t>((static_cast<int>(word >> (4 * kAwqNibbleOfColumn[i])) & 15) - zc[r]);
          }
        }
  });
  return l;
}

// ---- compressed-tensors integer layers ---------------------------------------------------------------

// The number of [rows, groups] scale groups from a compressed-tensors weight_scale: [rows, groups],
// [rows, 1] (per channel), [1] or [] (per tensor); the scale is expanded to [rows, groups].
void ct_scales(Module& m, IntLayer& l, bool codes) {
  const HfRawTensor& s = m.get("weight_scale", kFloatTypes, "the weight scales");
  const int64_t count = numel(s.shape);
  if (s.shape.size() == 2 && s.shape[0] == l.rows) {
    l.groups = s.shape[1];
    STRATA_CHECK_KIND(ErrorKind::kFormat, l.groups > 0 && l.cols % l.groups == 0,
                      describe(m.name("weight_scale"), s), " has ", l.groups, " groups per row, which do not tile the ",
                      l.cols, " input columns");
    read_scales(m, "weight_scale", s, l, false, codes);
  } else {
    STRATA_CHECK_KIND(ErrorKind::kFormat, count == 1, describe(m.name("weight_scale"), s), " has shape ",
                      shape_str(s.shape), "; strata reads per-tensor [1], per-channel [", l.rows, ", 1] and group [",
                      l.rows, ", groups] scales for this layer");
    l.groups = 1;
    l.scale_tensor = describe(m.name("weight_scale"), s);
    l.scale.assign(static_cast<size_t>(l.rows), float_at(s, 0));
    l.scales_f16 = f16_exact(l.scale[0]);
  }
  l.group.resize(static_cast<size_t>(l.cols));
  for (int64_t c = 0; c < l.cols; ++c) l.group[static_cast<size_t>(c)] = static_cast<int32_t>(c * l.groups / l.cols);
}

// Zero points, [rows, groups] (unpacked int8) or packed along rows ([ceil(rows / per_word), groups] int32).
std::vector<int> ct_zero_points(Module& m, const IntLayer& l, int bits) {
  std::vector<int> z(static_cast<size_t>(l.rows * l.groups), 0);
  if (!m.has("weight_zero_point")) return z;
  const HfRawTensor& t = m.get("weight_zero_point", {DType::kI8, DType::kI32}, "the weight zero points");
  if (t.dtype == DType::kI32 && bits < 8) {  // pack_to_int32 along dim 0, offset by 2^(bits-1)
    const int per = 32 / bits, mask = (1 << bits) - 1;
    m.expect_shape("weight_zero_point", {(l.rows + per - 1) / per, l.groups}, "packed zero points");
    for (int64_t r = 0; r < l.rows; ++r)
      for (int64_t g = 0; g < l.groups; ++g) {
        const auto word = static_cast<uint32_t>(int_at(t, (r / per) * l.groups + g));
        z[static_cast<size_t>(r * l.groups + g)] = (static_cast<int>(word >> (bits * (r % per))) & mask) - (1 << (bits - 1));
      }
    return z;
  }
  const int64_t count = numel(t.shape);
  STRATA_CHECK_KIND(ErrorKind::kFormat, count == l.rows * l.groups || count == 1, describe(m.name("weight_zero_point"), t),
                    " has shape ", shape_str(t.shape), " but the scales have ", l.rows, " x ", l.groups, " groups");
  for (int64_t i = 0; i < l.rows * l.groups; ++i) z[static_cast<size_t>(i)] = static_cast<int>(int_at(t, count == 1 ? 0 : i));
  return z;
}

IntLayer ct_packed(Module& m, const HfQuantization& q, bool codes, int threads) {
  const int bits = q.bits, per = 32 / bits, mask = (1 << bits) - 1, offset = 1 << (bits - 1);
  const HfRawTensor& packed = m.get("weight_packed", {DType::kI32}, "packed codes");
  STRATA_CHECK_KIND(ErrorKind::kFormat, packed.shape.size() == 2, describe(m.name("weight_packed"), packed),
                    " must be 2-D [out, in / ", per, "]");
  IntLayer l;
  l.rows = packed.shape[0];
  l.cols = packed.shape[1] * per;
  if (m.has("weight_shape")) {
    const HfRawTensor& shape = m.get("weight_shape", {DType::kI32, DType::kI64}, "the unpacked shape");
    STRATA_CHECK_KIND(ErrorKind::kFormat, numel(shape.shape) == 2 && int_at(shape, 0) == l.rows &&
                          int_at(shape, 1) > l.cols - per && int_at(shape, 1) <= l.cols,
                      describe(m.name("weight_shape"), shape), " does not match ", describe(m.name("weight_packed"), packed),
                      " ", shape_str(packed.shape), " at ", bits, " bits");
    l.cols = int_at(shape, 1);
  }
  ct_scales(m, l, codes);
  const std::vector<int> z = ct_zero_points(m, l, bits);
  d_range(l, z, -offset, mask - offset);
  l.label = cat(m.name("weight_packed"), " in ", m.file(), " (compressed-tensors int", bits, ")");
  if (!codes) return l;
  l.d.resize(static_cast<size_t>(l.rows * l.cols));
  const uint8_t* src = packed.data;
  const int64_t words = packed.shape[1], cols = l.cols, groups = l.groups;
  int16_t* d = l.d.data();
  const int32_t* group = l.group.data();
  const int* zp = z.data();
  for_ranges(threads, l.rows, [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = src + r * words * 4;
      const int* zr = zp + r * groups;
      int16_t* dr = d + r * cols;
      for (int64_t c = 0; c < cols; c += per) {
        uint32_t word;
        std::memcpy(&word, row + (c / per) * 4, 4);
        for (int64_t k = 0; k < std::min<int64_t>(per, cols - c); ++k)
          dr[c + k] = static_cast<int16_t>((static_cast<int>(word >> (bits * k)) & mask) - offset - zr[group[c + k]]);
      }
    }
  });
  return l;
}

IntLayer ct_int8(Module& m, const HfQuantization& q, bool codes, int threads) {
  const HfRawTensor& w = m.get("weight", {DType::kI8}, "int8 codes");
  STRATA_CHECK_KIND(ErrorKind::kFormat, w.shape.size() == 2, describe(m.name("weight"), w), " must be 2-D");
  IntLayer l;
  l.rows = w.shape[0], l.cols = w.shape[1];
  ct_scales(m, l, codes);
  const std::vector<int> z = ct_zero_points(m, l, 8);
  d_range(l, z, -128, 127);
  l.label = cat(m.name("weight"), " in ", m.file(), " (", q.method_name, " int8)");
  if (!codes) return l;
  l.d.resize(static_cast<size_t>(l.rows * l.cols));
  for_ranges(threads, l.rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < l.cols; ++c)
        l.d[static_cast<size_t>(r * l.cols + c)] =
            static_cast<int16_t>(static_cast<int8_t>(w.data[r * l.cols + c]) -
                                 z[static_cast<size_t>(r * l.groups + l.group[static_cast<size_t>(c)])]);
  });
  return l;
}

// ---- FP8 ---------------------------------------------------------------------------------------------

// Plans the layer (out == nullptr: its type from the shapes alone) or writes its bytes.
void fp8(Module& m, const HfQuantization& q, HfQuantLayer& out_layer, uint8_t* out, int threads) {
  const HfRawTensor& w = m.get("weight", {DType::kF8_E4M3}, "FP8 codes");
  STRATA_CHECK_KIND(ErrorKind::kFormat, w.shape.size() == 2, describe(m.name("weight"), w), " must be 2-D");
  const int64_t rows = w.shape[0], cols = w.shape[1];
  out_layer.shape = {rows, cols};
  // scale_of(r, c): the scale of row r's 128-column block starting at column c.
  const char* scale_name = m.has("weight_scale_inv") ? "weight_scale_inv" : "weight_scale";
  const HfRawTensor& s = m.get(scale_name, kFloatTypes, "the FP8 scales");
  const int64_t count = numel(s.shape);
  // Per-tensor / per-channel weight_scale (not a block grid's weight_scale_inv) on rows that 128-column blocks do
  // not tile: dequantized exactly to f32, like the int layers without a block type.
  const bool row_scales = std::strcmp(scale_name, "weight_scale") == 0 &&
                          (count == 1 || (count == rows && (s.shape.size() == 1 || s.shape.back() == 1)));
  if (cols % kF8Block != 0 && row_scales) {
    out_layer.dtype = DType::kF32;
    out_layer.described = cat(m.name("weight"), " in ", m.file(), " (", q.method_name, " e4m3) -> f32");
    out_layer.unquantized_why =
        cat("its ", cols, " columns are not a multiple of the ", kF8Block, "-column f8_e4m3_b128 block");
    if (out == nullptr) return;
    auto* y = reinterpret_cast<float*>(out);
    for_ranges(threads, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c)
          y[r * cols + c] = e4m3_to_f32(w.data[r * cols + c]) * float_at(s, count == 1 ? 0 : r);
    });
    return;
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat, cols % kF8Block == 0, describe(m.name("weight"), w), " has ", cols,
                    " input columns; strata stores FP8 rows in blocks of ", kF8Block,
                    " (f8_e4m3_b128), so rows must be a multiple of ", kF8Block);
  int64_t row_band = rows, col_band = cols, scale_cols = 1;  // one scale per [row_band, col_band] tile
  if (count == 1) {
  } else if (count == rows && (s.shape.size() == 1 || s.shape.back() == 1)) {
    row_band = 1;
  } else if (s.shape.size() == 2) {
    row_band = (rows + s.shape[0] - 1) / s.shape[0];
    col_band = (cols + s.shape[1] - 1) / s.shape[1];
    scale_cols = s.shape[1];
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      (rows + row_band - 1) / row_band == s.shape[0] && col_band % kF8Block == 0, describe(m.name(scale_name), s),
                      " has shape ", shape_str(s.shape), " for a [", rows, ", ", cols,
                      "] weight; strata reads per-tensor, per-channel, and group or block scales whose column span is "
                      "a multiple of ", kF8Block);
  } else {
    STRATA_THROW(ErrorKind::kFormat, describe(m.name(scale_name), s), " has shape ", shape_str(s.shape), " for a [",
                 rows, ", ", cols, "] FP8 weight; expected [1], [", rows, "], [", rows, ", 1] or a 2-D block grid");
  }
  out_layer.dtype = DType::kF8_B128;
  out_layer.described = cat(m.name("weight"), " in ", m.file(), " (", q.method_name, " e4m3) -> f8_e4m3_b128");
  if (out == nullptr) return;
  for_ranges(threads, rows, [&](int64_t r0, int64_t r1) {
    auto* blk = reinterpret_cast<BlockF8B128*>(out) + r0 * (cols / kF8Block);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; c += kF8Block, ++blk) {
        blk->scale = float_at(s, count == 1 ? 0 : (r / row_band) * scale_cols + c / col_band);
        std::memcpy(blk->q, w.data + r * cols + c, kF8Block);
      }
  });
}

// Plans (out == nullptr: sets the layer's shape, type and description) or transcodes one layer as planned.
// `threads` split the rows (or columns) of one layer's transcoding; the bytes do not depend on them.
void build(Module& m, const HfQuantization& q, HfQuantLayer& layer, uint8_t* out, int threads) {
  if (layer.kind == 'f') return fp8(m, q, layer, out, threads);
  const bool codes = out != nullptr;
  const IntLayer l = layer.kind == 'q' ? (q.method == HfQuantMethod::kGptq ? gptq(m, q, codes, threads)
                                                                          : awq(m, q, codes, threads))
                     : layer.kind == 'p' ? ct_packed(m, q, codes, threads)
                                         : ct_int8(m, q, codes, threads);
  if (codes) return emit(l, layer.dtype, out, threads);
  layer.shape = {l.rows, l.cols};
  layer.dtype = choose_type(l, layer.unquantized_why);
  layer.described = cat(l.label, " -> ", dtype_name(layer.dtype));
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

HfQuantization parse_hf_quantization(const std::string& json_text, const std::string& source) {
  boost::system::error_code ec;
  const json::value v = json::parse(json_text, ec);
  STRATA_CHECK_KIND(ErrorKind::kFormat, !ec && v.is_object(), source, ": quantization_config must be an object");
  const Fields f{v.as_object(), source};
  HfQuantization q;
  q.source = source;
  q.method_name = f.string("quant_method", "");
  if (q.method_name == "gptq") {
    q.method = HfQuantMethod::kGptq;
    q.bits = static_cast<int>(f.integer("bits", 4));
    STRATA_CHECK_KIND(ErrorKind::kFormat, q.bits == 4 || q.bits == 8, source, ": GPTQ with bits = ", q.bits,
                      " is not supported; strata reads 4- and 8-bit GPTQ");
    q.group_size = f.integer("group_size", 128);
    q.desc_act = f.boolean("desc_act", false);
    const std::string format = f.string("checkpoint_format", f.string("format", "gptq").c_str());
    STRATA_CHECK_KIND(ErrorKind::kFormat, format == "gptq" || format == "gptq_v2", source, ": GPTQ checkpoint_format '",
                      format, "' is not supported; strata reads gptq (v1, zero points stored minus one) and gptq_v2");
    q.gptq_v1 = format == "gptq";
  } else if (q.method_name == "awq") {
    q.method = HfQuantMethod::kAwq;
    q.bits = static_cast<int>(f.integer("bits", f.integer("w_bit", 4)));
    q.group_size = f.integer("group_size", f.integer("q_group_size", 128));
    const std::string version = f.string("version", "gemm");
    STRATA_CHECK_KIND(ErrorKind::kFormat, q.bits == 4 && version == "gemm", source, ": AWQ ", q.bits, "-bit '",
                      version, "' is not supported; strata reads 4-bit AWQ in the GEMM packing (version \"gemm\")");
  } else if (q.method_name == "fp8") {
    q.method = HfQuantMethod::kFp8;
    q.float_weights = true;
    q.bits = 8;
    const std::string fmt = f.string("fmt", "e4m3");
    STRATA_CHECK_KIND(ErrorKind::kFormat, fmt == "e4m3", source, ": FP8 fmt '", fmt, "' is not supported (e4m3 only)");
    q.static_input_scales = f.string("activation_scheme", "dynamic") == "static";
  } else if (q.method_name == "compressed-tensors") {
    q.method = HfQuantMethod::kCompressedTensors;
    parse_compressed_tensors(f, q);
  } else {
    STRATA_THROW(ErrorKind::kFormat, source, ": quant_method '", q.method_name, "' is not supported; ", kSupported);
  }
  return q;
}

std::vector<HfQuantLayer> plan_hf_quantized(const HfQuantization& q, std::map<std::string, HfRawTensor>& tensors) {
  // Find the quantized layers first: consuming tensors while iterating the map would invalidate it.
  std::vector<std::pair<std::string, char>> layers;  // prefix, kind (HfQuantLayer::kind)
  for (const auto& [name, t] : tensors) {
    if (ends_with(name, ".qweight")) {
      layers.emplace_back(name.substr(0, name.size() - 8), 'q');
    } else if (ends_with(name, ".weight_packed")) {
      layers.emplace_back(name.substr(0, name.size() - 14), 'p');
    } else if (ends_with(name, ".weight") && (t.dtype == DType::kF8_E4M3 || t.dtype == DType::kI8)) {
      layers.emplace_back(name.substr(0, name.size() - 7), t.dtype == DType::kF8_E4M3 ? 'f' : 'i');
    }
  }
  std::vector<HfQuantLayer> out;
  int64_t static_scales = 0, unquantized = 0;
  std::string first_unquantized;
  const bool gptq_awq = q.method == HfQuantMethod::kGptq || q.method == HfQuantMethod::kAwq;
  const bool ct = q.method == HfQuantMethod::kCompressedTensors;
  for (const auto& [prefix, kind] : layers) {
    if (kind == 'q') {
      STRATA_CHECK_KIND(ErrorKind::kFormat, gptq_awq, "tensor '", prefix, ".qweight' is GPTQ/AWQ-packed but ",
                        q.source, " says quant_method '", q.method_name, "'");
    } else if (kind == 'p') {
      STRATA_CHECK_KIND(ErrorKind::kFormat, ct && !q.float_weights, "tensor '", prefix, ".weight_packed' is packed int",
                        " codes but ", q.source, " says quant_method '", q.method_name, "' with ",
                        q.float_weights ? "float" : "int", " weights");
    } else if (kind == 'f') {
      STRATA_CHECK_KIND(ErrorKind::kFormat, q.method == HfQuantMethod::kFp8 || (ct && q.float_weights), "tensor '",
                        prefix, ".weight' is FP8 but ", q.source, " says quant_method '", q.method_name, "'",
                        ct ? " with int weights" : "");
    } else {
      STRATA_CHECK_KIND(ErrorKind::kFormat, ct && !q.float_weights && q.bits == 8, "tensor '", prefix,
                        ".weight' is int8 but ", q.source, " says quant_method '", q.method_name,
                        "'; int8 weights come from compressed-tensors int-quantized W8A8");
    }
    Module m(tensors, prefix);
    HfQuantLayer l;
    l.prefix = prefix;
    l.kind = kind;
    l.weight_name = prefix + ".weight";
    build(m, q, l, nullptr, 1);
    if ((kind == 'f' || kind == 'i') && m.has("input_scale"))
      l.input_scale = float_at(m.get("input_scale", kFloatTypes, "the input scale"), 0);
    m.also_consume("input_scale");
    m.also_consume("input_zero_point");
    if (l.input_scale) ++static_scales;
    if (!l.unquantized_why.empty() && unquantized++ == 0) first_unquantized = cat(l.described, ": ", l.unquantized_why);
    LOG_DEBUG(l.described, l.unquantized_why.empty() ? "" : cat(" (", l.unquantized_why, ")"));
    l.parts = m.take();  // the layer keeps its source tensors; the caller sees only the rest
    out.push_back(std::move(l));
  }
  if (unquantized > 0)
    LOG_INFO(q.source, ": ", unquantized, " of ", out.size(), " quantized layers have no exact strata block type and "
             "are dequantized exactly to f32 (they run unquantized; first: ", first_unquantized, ")");
  if (static_scales > 0)
    LOG_INFO(q.source, ": ", static_scales, " layers carry static activation scales (input_scale); strata records "
             "them and computes with float activations (weight-only quantization)");
  return out;
}

void transcode_hf_layer(const HfQuantization& q, const HfQuantLayer& layer, uint8_t* out, int threads) {
  std::map<std::string, HfRawTensor> parts = layer.parts;
  Module m(parts, layer.prefix);
  HfQuantLayer planned = layer;  // build() reads the planned type and rewrites nothing else
  build(m, q, planned, out, threads);
}

std::vector<HfTranscoded> transcode_hf_quantized(const HfQuantization& q, std::map<std::string, HfRawTensor>& tensors) {
  std::vector<HfTranscoded> out;
  for (const HfQuantLayer& l : plan_hf_quantized(q, tensors)) {
    HfTranscoded t{l.weight_name, l.described, l.dtype, l.shape, std::vector<uint8_t>(l.nbytes()), l.input_scale,
                   l.unquantized_why};
    transcode_hf_layer(q, l, t.bytes.data());
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace strata
