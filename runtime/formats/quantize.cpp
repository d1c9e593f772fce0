// runtime/formats/quantize.cpp: quantize_model. Each output tensor is a TensorSpec whose fill reads its
// rows from the memory-mapped source, widens them to f32 (dequantizing a quantized source), permutes q/k
// rows into GGUF's adjacent-pair RoPE layout when the source is a rotate-half (Hugging Face) checkpoint,
// and encodes them; write_gguf streams the specs chunk by chunk on several threads.
#include "runtime/formats/quantize.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "runtime/formats/calibrated_quantize.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/model_writer.h"
#include "runtime/formats/rope_layout.h"
#include "runtime/log.h"
#include "runtime/models/model_description.h"

namespace strata {
namespace fs = std::filesystem;

namespace {

struct RecipeRow {
  const char* name;
  DType base;
  QuantRecipe::Mix mix;
  uint32_t file_type;  // LLAMA_FTYPE_*
};

using Mix = QuantRecipe::Mix;

// file_type is llama.cpp's LLAMA_FTYPE_* (include/llama.h), which llama-quantize writes as general.file_type.
constexpr RecipeRow kRecipes[] = {
    {"f32", DType::kF32, Mix::kNone, 0},        {"f16", DType::kF16, Mix::kNone, 1},
    {"bf16", DType::kBF16, Mix::kNone, 32},     {"q8_0", DType::kQ8_0, Mix::kNone, 7},
    {"q4_0", DType::kQ4_0, Mix::kNone, 2},      {"q4_1", DType::kQ4_1, Mix::kNone, 3},
    {"q5_0", DType::kQ5_0, Mix::kNone, 8},      {"q5_1", DType::kQ5_1, Mix::kNone, 9},
    {"q2_k", DType::kQ2_K, Mix::kNone, 10},     {"q3_k_s", DType::kQ3_K, Mix::kSmall, 11},
    {"q3_k_m", DType::kQ3_K, Mix::kMedium, 12}, {"q3_k", DType::kQ3_K, Mix::kMedium, 12},
    {"q3_k_l", DType::kQ3_K, Mix::kLarge, 13},  {"q4_k", DType::kQ4_K, Mix::kMedium, 15},
    {"q4_k_s", DType::kQ4_K, Mix::kSmall, 14},  {"q4_k_m", DType::kQ4_K, Mix::kMedium, 15},
    {"q5_k", DType::kQ5_K, Mix::kMedium, 17},   {"q5_k_s", DType::kQ5_K, Mix::kSmall, 16},
    {"q5_k_m", DType::kQ5_K, Mix::kMedium, 17}, {"q6_k", DType::kQ6_K, Mix::kNone, 18},
    {"iq4_nl", DType::kIQ4_NL, Mix::kNone, 25}, {"iq4_xs", DType::kIQ4_XS, Mix::kNone, 30},
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Layer index of "blk.N.*", else -1.
int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(4, dot - 4));
  } catch (const std::exception&) {
    return -1;
  }
}

// llama-quantize's "use more bits" layers: the first and last eighth, and every third layer between.
bool more_bits_layer(int64_t layer, int64_t n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

// The replacement when a tensor's rows do not divide its type's 256-element block (llama-quantize's table
// for these types); 32-element types have none.
DType block_fallback(DType dt) {
  switch (dt) {
    case DType::kQ2_K:
    case DType::kQ3_K: return DType::kQ4_0;
    case DType::kQ4_K: return DType::kQ5_0;
    case DType::kQ5_K: return DType::kQ5_1;
    case DType::kQ6_K: return DType::kQ8_0;
    case DType::kIQ4_XS: return DType::kIQ4_NL;
    default: return dt;
  }
}

bool is_iq4(DType dt) { return dt == DType::kIQ4_NL || dt == DType::kIQ4_XS; }

// llama-quantize's attn_v rule (no imatrix) for layer `layer`.
DType attn_v_type(const QuantRecipe& r, DType dt, int64_t layer, const QuantMixModel& m) {
  if (r.base == DType::kQ2_K) dt = m.n_gqa >= 4 ? DType::kQ4_K : DType::kQ3_K;
  else if (r.base == DType::kQ3_K && r.mix == Mix::kMedium) dt = layer < 2 ? DType::kQ5_K : DType::kQ4_K;
  else if (r.base == DType::kQ3_K && r.mix == Mix::kLarge) dt = DType::kQ5_K;
  else if (is_iq4(r.base) && m.n_gqa >= 4) dt = DType::kQ5_K;
  else if (r.mix == Mix::kMedium && more_bits_layer(layer, m.n_layers)) dt = DType::kQ6_K;
  else if (r.base == DType::kQ4_K && r.mix == Mix::kSmall && layer < 4) dt = DType::kQ5_K;
  // 70B: eight query heads share each attn_v, which is 8x smaller than attn_q; more bits cost little.
  if (m.is_70b && (dt == DType::kQ3_K || dt == DType::kQ4_K)) dt = DType::kQ5_K;
  return dt;
}

DType ffn_down_type(const QuantRecipe& r, DType dt, int64_t layer, const QuantMixModel& m) {
  const int64_t n = m.n_layers;
  if (r.base == DType::kQ2_K) return DType::kQ3_K;
  if (r.base == DType::kQ3_K && r.mix == Mix::kMedium) return layer < n / 16 ? DType::kQ5_K : DType::kQ4_K;
  if (r.base == DType::kQ3_K && r.mix == Mix::kLarge) return DType::kQ5_K;
  if (r.mix == Mix::kMedium && (r.base == DType::kQ4_K || r.base == DType::kQ5_K))
    return more_bits_layer(layer, n) ? DType::kQ6_K : dt;
  if (is_iq4(r.base) && layer < n / 8) return DType::kQ5_K;
  if (r.base == DType::kQ4_K && r.mix == Mix::kSmall && layer < n / 8) return DType::kQ5_K;
  return dt;
}

DType attn_output_type(const QuantRecipe& r, DType dt) {
  if (r.base == DType::kQ2_K) return DType::kQ3_K;
  if (r.base == DType::kQ3_K && r.mix == Mix::kMedium) return DType::kQ4_K;
  if (r.base == DType::kQ3_K && r.mix == Mix::kLarge) return DType::kQ5_K;
  return dt;
}

// Widens n values of `dtype` to f32.
void to_f32(DType dtype, const uint8_t* src, float* dst, int64_t n, const std::string& tensor) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(reinterpret_cast<const uint16_t*>(src)[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(src)[i]);
      return;
    default:
      STRATA_CHECK(dtype_is_quantized(dtype), "tensor '", tensor, "' is ", dtype_name(dtype),
                   ", which quantize cannot read as numbers");
      dequantize_row(dtype, src, dst, n);
  }
}

void encode(const float* x, int64_t n, DType dtype, uint8_t* dst) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_f16(x[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_bf16(x[i]);
      return;
    default: quantize_row(dtype, x, dst, n);
  }
}

// Tensors in llama.cpp's order (embedding, layers, final norm, head), then anything else the source has.
std::vector<const TensorEntry*> ordered_entries(const Checkpoint& ckpt) {
  std::vector<const TensorEntry*> out;
  std::set<std::string> seen;
  for (const TensorRef& t : model_tensors(ckpt.config()))
    if (ckpt.has(t.name) && seen.insert(t.name).second) out.push_back(&ckpt.entry(t.name));
  for (const TensorEntry& e : ckpt.entries())
    if (seen.insert(e.name).second) out.push_back(&e);
  return out;
}

// The source GGUF's own metadata (tokenizer, chat template, names), with file_type and the quantization
// version replaced.
std::vector<std::pair<std::string, GgufValue>> copied_gguf_metadata(const std::string& path, uint32_t file_type) {
  const MappedFile file(path);
  const GgufFile g = parse_gguf_buffer(file.data(), file.size(), path);
  std::vector<std::pair<std::string, GgufValue>> md;
  for (const auto& [key, value] : g.metadata)
    if (key != "general.file_type" && key != "general.quantization_version") md.emplace_back(key, value);
  md.emplace_back("general.file_type", GgufValue::u32(file_type));
  return md;
}

}  // namespace

QuantRecipe quant_recipe(const std::string& type) {
  std::string lower = type;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const RecipeRow& r : kRecipes)
    if (lower == r.name) return QuantRecipe{lower, r.base, r.mix, r.file_type};
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown quantization type '", type, "'; choose one of: ",
               quant_type_names(), " (GGUF) or ", calibrated_type_names(), " (calibrated, Hugging Face safetensors)");
}

std::string quant_type_names() {
  std::string names;
  for (const RecipeRow& r : kRecipes) names += (names.empty() ? "" : ", ") + std::string(r.name);
  return names;
}

QuantMixModel quant_mix_model(const ModelConfig& config, bool has_output) {
  QuantMixModel m;
  m.n_layers = config.n_layers;
  m.n_gqa = config.n_kv_heads > 0 ? config.n_heads / config.n_kv_heads : 1;
  m.has_output = has_output;
  // llama.cpp's LLM_TYPE_70B for the architectures written here: llama (mistral is written as llama) with 80
  // layers and grouped key/value heads, qwen2 with 80 layers.
  m.is_70b = config.n_layers == 80 &&
             (config.arch == "qwen2" || ((config.arch == "llama" || config.arch == "mistral") && m.n_gqa > 1));
  return m;
}

TensorTypeChoice choose_tensor_type(const QuantRecipe& recipe, const std::string& name, const Shape& shape,
                                    const QuantMixModel& model, bool pure) {
  const bool matrix = shape.size() >= 2 && ends_with(name, "weight") && !ends_with(name, "_norm.weight") &&
                      name.find("norm.weight") == std::string::npos;
  if (!matrix) return {DType::kF32, false};
  if (!dtype_is_quantized(recipe.base) || pure) return {recipe.base, false};
  const int64_t cols = shape.back();
  DType dt = recipe.base;
  const bool head = name == "output.weight" || (!model.has_output && name == "token_embd.weight");
  const int64_t layer = layer_of(name);
  if (head) {
    if (cols % dtype_block_elems(dt) != 0) {
      dt = DType::kQ8_0;
    } else if (dt != DType::kQ8_0) {
      dt = DType::kQ6_K;
    }
  } else if (layer >= 0 && ends_with(name, ".attn_v.weight")) {
    dt = attn_v_type(recipe, dt, layer, model);
  } else if (layer >= 0 && ends_with(name, ".ffn_down.weight")) {
    dt = ffn_down_type(recipe, dt, layer, model);
  } else if (layer >= 0 && ends_with(name, ".attn_output.weight")) {
    dt = attn_output_type(recipe, dt);
  }
  if (cols % dtype_block_elems(dt) != 0 && block_fallback(dt) != dt) return {block_fallback(dt), true};
  return {dt, false};
}

QuantizeResult quantize_model(const QuantizeOptions& o, QuantizeProgress* progress) {
  if (calibrated_type(o.type)) return quantize_calibrated(o, progress);
  const QuantRecipe recipe = quant_recipe(o.type);
  STRATA_CHECK(!o.out.empty(), "quantize needs an output file (--out FILE.gguf)");
  STRATA_CHECK(fs::path(o.out).extension() == ".gguf", "quantize writes GGUF: the output '", o.out,
               "' must end in .gguf");
  std::error_code ec;
  STRATA_CHECK(!fs::exists(o.model) || !fs::equivalent(o.model, o.out, ec), "the output '", o.out,
               "' is the source model; write to another file");
  STRATA_CHECK(o.force || !fs::exists(o.out), "the output '", o.out,
               "' exists; pass --force to overwrite it or choose another path");

  const std::unique_ptr<Checkpoint> ckpt = open_checkpoint(o.model);
  ModelConfig config = ckpt->config();
  STRATA_CHECK(!config.moe.enabled(), o.model, ": a ", config.arch,
               " mixture-of-experts model; quantize writes dense Llama-family models (llama, mistral, qwen2) only");
  const bool permute_qk = config.arch != "qwen2" && config.rope_style == RopeStyle::kHalf;
  if (permute_qk) config.rope_style = RopeStyle::kAdjacent;
  const QuantMixModel mix_model = quant_mix_model(config, ckpt->has("output.weight"));

  QuantizeResult result;
  std::vector<TensorSpec> specs;
  bool requantized = false;
  for (const TensorEntry* e : ordered_entries(*ckpt)) {
    TensorTypeChoice choice = choose_tensor_type(recipe, e->name, e->shape, mix_model, o.pure);
    const int64_t cols = e->shape.size() >= 2 ? e->shape.back() : 1;
    if (dtype_is_quantized(choice.dtype) && cols % dtype_block_elems(choice.dtype) != 0) {
      STRATA_CHECK(o.f16_fallback, o.model, ": tensor '", e->name, "' has rows of ", cols,
                   " elements, which do not divide into ", dtype_name(choice.dtype), " blocks of ",
                   dtype_block_elems(choice.dtype), "; pass --f16-fallback to write such tensors as f16 (as "
                   "llama-quantize does), or choose --type f16");
      LOG_DEBUG("quantize: ", e->name, " has rows of ", cols, " elements: f16 instead of ", dtype_name(choice.dtype));
      choice = {DType::kF16, true};
    }
    requantized = requantized || dtype_is_quantized(e->dtype);
    if (choice.fallback && choice.dtype != DType::kF16)
      LOG_DEBUG("quantize: ", e->name, " has rows of ", cols, " elements (not a multiple of 256): ",
                dtype_name(choice.dtype), " instead of a 256-element type, as llama-quantize does");
    result.tensors.push_back({e->name, e->dtype, choice.dtype, e->shape, choice.fallback});
    result.source_bytes += e->nbytes;
    result.parameters += shape_numel(e->shape);

    int64_t head_dim = 0;
    if (permute_qk && (e->name.find(".attn_q.") != std::string::npos || e->name.find(".attn_k.") != std::string::npos))
      head_dim = config.head_dim;
    TensorSpec spec;
    spec.name = e->name;
    spec.dtype = choice.dtype;
    spec.shape = e->shape;
    // A view of the source bytes (nothing is read until a fill touches them); taken here, on one thread.
    const Tensor whole = ckpt->tensor(e->name);
    const std::string name = e->name;
    const DType in = e->dtype, out = choice.dtype;
    const bool vector = e->shape.size() < 2;  // a 1-D tensor's "rows" are its elements
    spec.fill = [whole, name, in, out, cols, vector, head_dim, progress](int64_t row0, int64_t n, uint8_t* dst) {
      const auto* base = static_cast<const uint8_t*>(whole.raw());
      std::vector<float> buf(static_cast<size_t>(vector ? whole.numel() : cols));
      if (vector) {  // small (norms, biases): widen it all, then pick the chunk's elements
        to_f32(in, base, buf.data(), whole.numel(), name);
        std::vector<float> part(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i)
          part[static_cast<size_t>(i)] =
              buf[static_cast<size_t>(head_dim > 0 ? half_row_for_adjacent_row(row0 + i, head_dim) : row0 + i)];
        encode(part.data(), n, out, dst);
      } else {
        const uint64_t in_row = static_cast<uint64_t>(dtype_bytes(in, cols));
        const uint64_t out_row = static_cast<uint64_t>(dtype_bytes(out, cols));
        for (int64_t r = row0; r < row0 + n; ++r) {
          const int64_t s = head_dim > 0 ? half_row_for_adjacent_row(r, head_dim) : r;
          to_f32(in, base + static_cast<uint64_t>(s) * in_row, buf.data(), cols, name);
          encode(buf.data(), cols, out, dst + static_cast<uint64_t>(r - row0) * out_row);
        }
      }
      if (progress != nullptr) progress->elements_done += vector ? n : n * cols;
    };
    specs.push_back(std::move(spec));
  }
  if (requantized)
    LOG_WARN("quantize: ", o.model, " is already quantized; its tensors are dequantized and quantized again, "
             "which adds the new type's error to the old one's (quantize from an f16/bf16/f32 checkpoint when you can)");

  std::vector<std::pair<std::string, GgufValue>> metadata;
  if (ckpt->format() == "gguf") {
    metadata = copied_gguf_metadata(o.model, recipe.file_type);
  } else {
    STRATA_CHECK(ckpt->tokenizer().has_value(), o.model,
                 ": no tokenizer found (tokenizer.json / tokenizer.model / tokenizer.bin); a GGUF for llama.cpp "
                 "needs one embedded");
    std::string model_name = fs::path(o.model).filename().string();
    if (model_name.empty()) model_name = fs::path(o.model).parent_path().filename().string();
    metadata = gguf_model_metadata(config, *ckpt->tokenizer(), model_name, recipe.file_type);
    if (config.rope_scaling.factor > 0 && !ckpt->has("rope_freqs.weight")) {
      const std::vector<float> factors = llama3_rope_factors(config);
      Tensor t = Tensor::empty({static_cast<int64_t>(factors.size())}, DType::kF32);
      std::memcpy(t.raw(), factors.data(), factors.size() * 4);
      specs.push_back(tensor_spec_of("rope_freqs.weight", t));
      result.tensors.push_back({"rope_freqs.weight", DType::kF32, DType::kF32, t.shape(), false});
    }
  }
  metadata.emplace_back("general.quantization_version", GgufValue::u32(2));

  if (progress != nullptr) {
    int64_t total = 0;
    for (const auto& s : specs) total += shape_numel(s.shape);
    progress->elements_total = total;
    progress->tensors_total = static_cast<int>(specs.size());
  }
  if (fs::path(o.out).has_parent_path()) fs::create_directories(fs::path(o.out).parent_path());
  write_gguf(o.out, metadata, specs, o.threads);
  result.output_bytes = static_cast<uint64_t>(fs::file_size(o.out));
  return result;
}

}  // namespace strata
