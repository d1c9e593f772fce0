// runtime/formats/model_writer.cpp: random weights from a counter-based generator (a value depends
// only on seed, tensor name and element index, so any thread count writes the same bytes), and the
// two output layouts.
#include "runtime/formats/model_writer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/rope_layout.h"
#include "runtime/formats/safetensors.h"
#include "runtime/log.h"
#include "runtime/model_presets.h"
#include "runtime/models/model_description.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {
namespace fs = std::filesystem;

namespace {

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: a bijection with full avalanche
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t tensor_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the canonical name, then mixed with the seed
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return mix64(h ^ mix64(seed));
}

// Standard normals for elements [first, first + n) of the stream `key` (Box-Muller on pairs).
// Work happens in fixed blocks aligned to absolute indices so that every element is computed by the
// same instruction sequence whatever range is asked for (vectorised math may differ from scalar in
// the last bit; this keeps the bytes independent of chunking and thread count).
void normal_fill(uint64_t key, uint64_t first, int64_t n, float* out) {
  constexpr uint64_t kPairs = 64;
  float block[2 * kPairs];
  uint64_t e = first;
  const uint64_t end = first + static_cast<uint64_t>(n);
  while (e < end) {
    const uint64_t base = e / (2 * kPairs) * (2 * kPairs);
    const uint64_t pair0 = base / 2;
    for (uint64_t p = 0; p < kPairs; ++p) {
      const uint64_t bits = mix64(key ^ mix64(pair0 + p));
      const float u1 = (static_cast<float>(bits >> 40) + 1.f) * (1.f / 16777216.f);  // (0, 1]
      const float u2 = static_cast<float>((bits >> 16) & 0xffffffu) * (1.f / 16777216.f);
      const float r = std::sqrt(-2.f * std::log(u1));
      block[2 * p] = r * std::cos(6.2831853f * u2);
      block[2 * p + 1] = r * std::sin(6.2831853f * u2);
    }
    const uint64_t stop = std::min(end, base + 2 * kPairs);
    for (; e < stop; ++e) *out++ = block[e - base];
  }
}

bool is_norm(const std::string& name) { return name.find("norm.weight") != std::string::npos; }

// Values of `count` elements of tensor `name` starting at flat (HF-layout) index `first`.
void tensor_values(const std::string& name, uint64_t key, uint64_t first, int64_t count, float* out) {
  normal_fill(key, first, count, out);
  const bool norm = is_norm(name);
  for (int64_t i = 0; i < count; ++i) out[i] = norm ? 1.f + 0.02f * out[i] : 0.02f * out[i];
}

// What a value becomes when stored at `dtype` and read back; norms stored as f32 in a GGUF of f16
// weights get the same rounding as in the f16 safetensors file, so both give the same logits.
float round_through(float v, DType dtype) {
  if (dtype == DType::kF16) return f16_to_f32(f32_to_f16(v));
  if (dtype == DType::kBF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

void encode_row(const float* x, int64_t n, DType dtype, uint8_t* dst) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, x, n * 4); break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_f16(x[i]);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(dst)[i] = f32_to_bf16(x[i]);
      break;
    default:
      STRATA_CHECK(can_quantize(dtype), "make-model cannot write dtype ", dtype_name(dtype));
      quantize_row(dtype, x, dst, n);
  }
}

struct Plan {
  ModelConfig config;
  DType dtype;
  bool q4_k_m = false;  // the Q4_K_M mix: q6_k for the tensors q6_k_for() names, q4_k for the other matrices
  bool gguf;
  bool permute_qk;  // GGUF of arch llama/mistral: adjacent-pair rows
};

// Which matrices the Q4_K_M mix keeps at 6 bits, after llama-quantize's rule: the output head, and
// attn_v / ffn_down in the first and last eighth of the layers and every third layer between.
bool q6_k_for(const std::string& name, int64_t n_layers) {
  if (name == "output.weight") return true;
  if (name.rfind("blk.", 0) != 0) return false;
  if (name.find(".attn_v.weight") == std::string::npos && name.find(".ffn_down.weight") == std::string::npos) return false;
  const int64_t layer = std::stoll(name.substr(4));
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

// The spec of one canonical tensor in the chosen layout.
TensorSpec make_spec(const Plan& plan, const std::string& name, uint64_t seed) {
  const ModelConfig& c = plan.config;
  TensorSpec spec;
  spec.name = plan.gguf ? name : canonical_to_hf_name(name, c.arch);
  const TensorSlot* slot = find_slot(c, name);
  STRATA_CHECK_KIND(ErrorKind::kInternal, slot != nullptr, "'", name, "' is not a tensor of a ", c.arch, " model");
  spec.shape = slot->full_shape(c);
  const bool vector = slot->is_vector();
  const int64_t cols = vector ? 1 : spec.shape[1];
  const DType dtype = plan.q4_k_m && q6_k_for(name, c.n_layers) ? DType::kQ6_K : plan.dtype;
  spec.dtype = dtype;
  DType value_dtype = dtype;  // the precision a value is rounded to
  // GGUF keeps norms, biases and MoE routers f32, like llama.cpp (routing is decided in f32).
  if (plan.gguf && (!slot->may_quantize() || slot->role == SlotRole::kRouter)) spec.dtype = DType::kF32;
  if (dtype_is_quantized(spec.dtype) && cols % dtype_block_elems(spec.dtype) != 0) {
    LOG_WARN("make-model: ", name, " has rows of ", cols, " elements, not a multiple of the ",
             dtype_block_elems(spec.dtype), "-element ", dtype_name(spec.dtype), " block; writing it as f16");
    spec.dtype = value_dtype = DType::kF16;
  }
  if (dtype_is_quantized(value_dtype)) value_dtype = DType::kF32;
  int64_t head_dim = 0;
  if (plan.permute_qk && (name.find("attn_q.") != std::string::npos || name.find("attn_k.") != std::string::npos))
    head_dim = c.head_dim;
  const uint64_t key = tensor_key(seed, name);
  const DType out = spec.dtype;
  spec.fill = [name, key, cols, vector, head_dim, value_dtype, out](int64_t row0, int64_t rows, uint8_t* dst) {
    std::vector<float> buf(static_cast<size_t>(vector ? rows : cols));
    if (vector && head_dim == 0) {  // 1-D: rows are elements, one contiguous run
      tensor_values(name, key, static_cast<uint64_t>(row0), rows, buf.data());
      for (auto& v : buf) v = round_through(v, value_dtype);
      encode_row(buf.data(), rows, out, dst);
      return;
    }
    const uint64_t row_bytes = static_cast<uint64_t>(dtype_bytes(out, cols));
    for (int64_t r = row0; r < row0 + rows; ++r) {
      const int64_t src = head_dim > 0 ? half_row_for_adjacent_row(r, head_dim) : r;
      tensor_values(name, key, static_cast<uint64_t>(src) * cols, cols, buf.data());
      if (out == DType::kF32)
        for (int64_t i = 0; i < cols; ++i) buf[i] = round_through(buf[i], value_dtype);
      encode_row(buf.data(), cols, out, dst + static_cast<uint64_t>(r - row0) * row_bytes);
    }
  };
  return spec;
}

// llama.cpp's layout of a layer's routed experts in GGUF: one [n_experts, rows, cols] tensor per
// projection ("blk.N.ffn_gate_exps.weight"), each expert's block the bytes (and values, same seed) of its
// per-expert tensor in the safetensors file.
TensorSpec stacked_experts_spec(const Plan& plan, const TensorRef& first, uint64_t seed) {
  const int64_t E = plan.config.moe.n_experts;
  auto experts = std::make_shared<std::vector<TensorSpec>>();
  for (int64_t e = 0; e < E; ++e)
    experts->push_back(make_spec(plan, cat("blk.", first.layer, ".", expert_instance(first.slot->name, e)), seed));
  const TensorSpec& one = experts->front();
  const std::string_view pattern = first.slot->name;  // "ffn_gate.#.weight" -> "ffn_gate_exps.weight"
  TensorSpec spec;
  spec.name = cat("blk.", first.layer, ".", pattern.substr(0, pattern.find('.')), "_exps.weight");
  spec.dtype = one.dtype;
  spec.shape = {E, one.shape[0], one.shape[1]};
  const uint64_t per_expert = one.nbytes();
  const int64_t rows = one.shape[0];
  spec.fill = [experts, per_expert, rows](int64_t e0, int64_t n, uint8_t* dst) {
    for (int64_t e = e0; e < e0 + n; ++e)
      (*experts)[static_cast<size_t>(e)].fill(0, rows, dst + static_cast<uint64_t>(e - e0) * per_expert);
  };
  return spec;
}

std::vector<TensorSpec> model_specs(const Plan& plan, uint64_t seed) {
  std::vector<TensorSpec> specs;
  for (const TensorRef& t : model_tensors(plan.config)) {
    if (plan.gguf && t.slot->per_expert) {
      if (t.expert == 0) specs.push_back(stacked_experts_spec(plan, t, seed));
      continue;
    }
    specs.push_back(make_spec(plan, t.name, seed));
  }
  return specs;
}

// general.architecture as llama.cpp names it: Mixtral is "llama" with an expert count.
std::string gguf_arch(const ModelConfig& c) {
  if (c.arch == "mixtral") return "llama";
  if (c.arch == "qwen2_moe") return "qwen2moe";
  if (c.arch == "qwen3_moe") return "qwen3moe";
  return c.arch;
}


}  // namespace

// llama.cpp's per-frequency Llama-3 factors (its rope_freqs.weight), so llama.cpp reads our GGUF right.
std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  std::vector<float> f;
  const double lo_wavelen = c.rope_scaling.original_max_position / c.rope_scaling.low_freq_factor;
  const double hi_wavelen = c.rope_scaling.original_max_position / c.rope_scaling.high_freq_factor;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(static_cast<double>(c.rope_theta), static_cast<double>(i) / c.head_dim);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < hi_wavelen) {
      f.push_back(1.f);
    } else if (wavelen > lo_wavelen) {
      f.push_back(c.rope_scaling.factor);
    } else {
      const double smooth = (c.rope_scaling.original_max_position / wavelen - c.rope_scaling.low_freq_factor) /
                            (c.rope_scaling.high_freq_factor - c.rope_scaling.low_freq_factor);
      f.push_back(static_cast<float>(1.0 / ((1 - smooth) / c.rope_scaling.factor + smooth)));
    }
  }
  return f;
}

namespace {

// llama.cpp's LLAMA_FTYPE_* for a file whose matrices are all `dtype` (K-quants: the _M mixes' ids are
// not claimed, since every matrix has the one type).
uint32_t llama_file_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 0;
    case DType::kF16: return 1;
    case DType::kQ4_0: return 2;
    case DType::kQ4_1: return 3;
    case DType::kQ8_0: return 7;
    case DType::kQ5_0: return 8;
    case DType::kQ5_1: return 9;
    case DType::kQ2_K: return 10;
    case DType::kQ3_K: return 11;  // Q3_K_S: all Q3_K
    case DType::kQ4_K: return 14;  // Q4_K_S
    case DType::kQ5_K: return 16;  // Q5_K_S
    case DType::kQ6_K: return 18;
    case DType::kIQ4_NL: return 25;
    case DType::kIQ4_XS: return 30;
    case DType::kBF16: return 32;
    default: return 0;
  }
}

}  // namespace

std::vector<std::pair<std::string, GgufValue>> gguf_model_metadata(const ModelConfig& c, const TokenizerData& tok,
                                                                   const std::string& model_name, uint32_t file_type) {
  const std::string a = gguf_arch(c) + ".";
  std::vector<std::pair<std::string, GgufValue>> md = {
      {"general.architecture", GgufValue::str(gguf_arch(c))},
      {"general.name", GgufValue::str(model_name)},
      {"general.file_type", GgufValue::u32(file_type)},
      {a + "vocab_size", GgufValue::u32(static_cast<uint32_t>(c.vocab_size))},
      {a + "context_length", GgufValue::u32(static_cast<uint32_t>(c.max_seq))},
      {a + "embedding_length", GgufValue::u32(static_cast<uint32_t>(c.hidden))},
      {a + "block_count", GgufValue::u32(static_cast<uint32_t>(c.n_layers))},
      {a + "feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.ffn))},
      {a + "attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.n_heads))},
      {a + "attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(c.n_kv_heads))},
      {a + "attention.key_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {a + "attention.value_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {a + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.rms_eps)},
      {a + "rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(c.head_dim))},
      {a + "rope.freq_base", GgufValue::f32(c.rope_theta)},
  };
  if (c.moe.enabled()) {  // llama.cpp's keys; the dense layers are the ones without a router tensor
    md.emplace_back(a + "expert_count", GgufValue::u32(static_cast<uint32_t>(c.moe.n_experts)));
    md.emplace_back(a + "expert_used_count", GgufValue::u32(static_cast<uint32_t>(c.moe.n_used)));
    md.emplace_back(a + "expert_feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.moe.expert_ffn)));
    if (c.moe.shared_ffn > 0)
      md.emplace_back(a + "expert_shared_feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.moe.shared_ffn)));
    md.emplace_back(a + "expert_weights_norm", GgufValue::boolean(c.moe.norm_topk));
  }
  if (c.rope_scaling.factor > 0) {
    md.emplace_back(a + "rope.scaling.type", GgufValue::str("llama3"));
    md.emplace_back(a + "rope.scaling.factor", GgufValue::f32(c.rope_scaling.factor));
    md.emplace_back(a + "rope.scaling.low_freq_factor", GgufValue::f32(c.rope_scaling.low_freq_factor));
    md.emplace_back(a + "rope.scaling.high_freq_factor", GgufValue::f32(c.rope_scaling.high_freq_factor));
    md.emplace_back(a + "rope.scaling.original_context_length",
                    GgufValue::u32(static_cast<uint32_t>(c.rope_scaling.original_max_position)));
  }
  const bool bpe = tok.kind == TokenizerKind::kByteBpe;
  md.emplace_back("tokenizer.ggml.model", GgufValue::str(bpe ? "gpt2" : "llama"));
  md.emplace_back("tokenizer.ggml.pre", GgufValue::str(bpe ? tok.pre_tokenizer : "default"));
  md.emplace_back("tokenizer.ggml.tokens", GgufValue::str_array(tok.tokens));
  if (bpe) md.emplace_back("tokenizer.ggml.merges", GgufValue::str_array(tok.merges));
  if (!tok.scores.empty()) md.emplace_back("tokenizer.ggml.scores", GgufValue::f32_array(tok.scores));
  if (!tok.types.empty()) md.emplace_back("tokenizer.ggml.token_type", GgufValue::i32_array(tok.types));
  auto id = [&](const char* key, int32_t v) {
    if (v >= 0) md.emplace_back(key, GgufValue::u32(static_cast<uint32_t>(v)));
  };
  id("tokenizer.ggml.bos_token_id", tok.bos_id);
  id("tokenizer.ggml.eos_token_id", tok.eos_id);
  id("tokenizer.ggml.unknown_token_id", tok.unk_id);
  id("tokenizer.ggml.padding_token_id", tok.pad_id);
  md.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(tok.add_bos));
  md.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(tok.add_eos));
  if (!bpe) md.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue::boolean(tok.add_space_prefix));
  return md;
}

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  STRATA_CHECK_KIND(ErrorKind::kIo, out.good(), "cannot write '", path.string(), "'");
}

std::string token_or_null(const TokenizerData& tok, int32_t id) {
  if (id < 0 || id >= static_cast<int32_t>(tok.tokens.size())) return "null";
  std::string s = "\"";
  for (char ch : tok.tokens[id]) s += (ch == '"' || ch == '\\') ? std::string("\\") + ch : std::string(1, ch);
  return s + "\"";
}

ModelConfig resolve_config(const MakeModelOptions& o) {
  ModelConfig c = o.config ? *o.config : model_preset(o.preset);
  c.validate(o.config ? "make-model config" : "model preset '" + o.preset + "'");
  return c;
}

}  // namespace

std::string make_model_output_path(const MakeModelOptions& o) {
  STRATA_CHECK(!o.out.empty(), "make-model needs an output path (--out)");
  if (o.format == "gguf" && fs::path(o.out).extension() != ".gguf") return (fs::path(o.out) / "model.gguf").string();
  return o.out;
}

Tensor random_model_tensor(const ModelConfig& config, const std::string& name, uint64_t seed) {
  const TensorSlot* slot = find_slot(config, name);
  STRATA_CHECK(slot != nullptr, "'", name, "' is not a tensor of a ", config.arch, " model");
  const Shape shape = slot->full_shape(config);
  Tensor t = Tensor::empty(shape, DType::kF32);
  tensor_values(name, tensor_key(seed, name), 0, t.numel(), t.data<float>());
  return t;
}

void make_model(const MakeModelOptions& o) {
  Plan plan;
  plan.config = resolve_config(o);
  plan.q4_k_m = o.dtype == "q4_k_m";
  plan.dtype = plan.q4_k_m ? DType::kQ4_K : dtype_from_name(o.dtype);
  STRATA_CHECK(o.format == "safetensors" || o.format == "gguf", "make-model format '", o.format,
               "' is unknown; use safetensors or gguf");
  plan.gguf = o.format == "gguf";
  STRATA_CHECK(plan.dtype == DType::kF32 || plan.dtype == DType::kF16 || plan.dtype == DType::kBF16 ||
                   (plan.gguf && dtype_is_quantized(plan.dtype)),
               "make-model cannot write dtype ", o.dtype, " as ", o.format, "; use f32, f16 or bf16 (",
               quantized_dtype_names(), ", q4_k_m with --format gguf)");
  // llama.cpp permutes q/k rows for llama, mistral and Mixtral, not for the Qwen families.
  plan.permute_qk = plan.gguf && plan.config.arch.rfind("qwen", 0) != 0;

  TokenizerData tok = make_synthetic_tokenizer(plan.config.vocab_size);
  if (tok.bos_id >= 0) plan.config.bos_id = tok.bos_id;
  if (tok.eos_id >= 0) plan.config.eos_ids = {tok.eos_id};
  plan.config.rope_style = plan.permute_qk ? RopeStyle::kAdjacent : RopeStyle::kHalf;

  const std::string path = make_model_output_path(o);
  const std::string model_name = cat("strata-random-", o.config ? "custom" : o.preset, "-seed", o.seed);
  LOG_INFO("make-model: writing ", model_name, " (", plan.config.parameter_count(), " parameters, ", o.dtype,
           ") to ", path);
  std::vector<TensorSpec> specs = model_specs(plan, o.seed);
  if (plan.gguf) {
    if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
    if (plan.config.rope_scaling.factor > 0) {
      const std::vector<float> factors = llama3_rope_factors(plan.config);
      Tensor t = Tensor::empty({static_cast<int64_t>(factors.size())}, DType::kF32);
      std::memcpy(t.raw(), factors.data(), factors.size() * 4);
      specs.push_back(tensor_spec_of("rope_freqs.weight", t));
    }
    auto metadata = gguf_model_metadata(plan.config, tok, model_name, llama_file_type(plan.dtype));
    if (plan.q4_k_m)
      for (auto& [key, value] : metadata)
        if (key == "general.file_type") value = GgufValue::u32(15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    write_gguf(path, metadata, specs, o.threads);
    return;
  }
  const fs::path dir(path);
  fs::create_directories(dir);
  const char* torch_dtype = plan.dtype == DType::kF32 ? "float32" : plan.dtype == DType::kF16 ? "float16" : "bfloat16";
  write_text(dir / "config.json", hf_config_json(plan.config, torch_dtype));
  write_tokenizer_json(tok, (dir / "tokenizer.json").string());
  write_text(dir / "tokenizer_config.json",
             cat("{\"tokenizer_class\": \"LlamaTokenizerFast\", \"add_bos_token\": ", tok.add_bos ? "true" : "false",
                 ", \"add_eos_token\": ", tok.add_eos ? "true" : "false", ", \"bos_token\": ", token_or_null(tok, tok.bos_id),
                 ", \"eos_token\": ", token_or_null(tok, tok.eos_id), ", \"unk_token\": ", token_or_null(tok, tok.unk_id),
                 ", \"model_max_length\": ", plan.config.max_seq, "}\n"));
  write_safetensors((dir / "model.safetensors").string(), specs, {{"format", "pt"}}, o.threads);
}

}  // namespace strata
