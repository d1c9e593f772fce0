// runtime/formats/checkpoint.cpp: tensor lookup and views into the mapping, the checks shared by
// every format (CheckpointBuilder::finish), and open_checkpoint's dispatch on what `path` is.
#include "runtime/formats/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/llama2c.h"
#include "runtime/formats/mapped_file.h"

namespace strata {

bool Checkpoint::has(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return true;
  return false;
}

const TensorEntry& Checkpoint::entry(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return e;
  STRATA_THROW(ErrorKind::kFormat, path_, ": checkpoint has no tensor '", name, "' (", entries_.size(),
               " tensors in this ", format_, " checkpoint)");
}

std::shared_ptr<MappedFile> Checkpoint::file_of(const TensorEntry& entry) const {
  for (const auto& f : files_)
    if (f->path() == entry.file) return f;
  STRATA_THROW(ErrorKind::kInternal, path_, ": tensor '", entry.name, "' refers to unmapped file '", entry.file, "'");
}

Tensor Checkpoint::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  auto file = file_of(e);
  // A file truncated under the mapping would SIGBUS on first touch; fail here with a message.
  file->check_intact();
  add_bytes_touched(e.nbytes);
  void* p = const_cast<uint8_t*>(file->data()) + e.offset;
  return Tensor::view(p, e.shape, e.dtype, Device::kCpu, std::shared_ptr<void>(file, p));
}

Tensor Checkpoint::tensor_rows(const std::string& name, int64_t row0, int64_t rows) const {
  const TensorEntry& e = entry(name);
  const int64_t total = e.shape.empty() ? 1 : e.shape[0];
  STRATA_CHECK(row0 >= 0 && rows >= 0 && row0 <= total && rows <= total - row0, path_, ": rows [", row0, ", ",
               row0 + rows, ") of tensor '", name, "' are out of range for shape ", shape_str(e.shape));
  const uint64_t row_bytes = total == 0 ? 0 : e.nbytes / static_cast<uint64_t>(total);
  STRATA_CHECK(e.shape.size() >= 2 || !dtype_is_quantized(e.dtype), path_, ": tensor '", name,
               "' is a 1-D quantized tensor; its rows are not addressable");
  auto file = file_of(e);
  file->check_intact();
  add_bytes_touched(row_bytes * static_cast<uint64_t>(rows));
  Shape shape = e.shape.empty() ? Shape{1} : e.shape;
  shape[0] = rows;
  void* p = const_cast<uint8_t*>(file->data()) + e.offset + row_bytes * static_cast<uint64_t>(row0);
  return Tensor::view(p, std::move(shape), e.dtype, Device::kCpu, std::shared_ptr<void>(file, p));
}

// ---- CheckpointBuilder ----

CheckpointBuilder::CheckpointBuilder(std::string path, std::string format) {
  path_ = std::move(path);
  format_ = std::move(format);
  config_source_ = path_;
}

void CheckpointBuilder::add_entry(TensorEntry entry) {
  for (const auto& e : entries_)
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.name != entry.name, entry.file, ": tensors '", e.file_name, "' and '",
                      entry.file_name, "' both map to '", entry.name, "'; the checkpoint has a duplicate tensor");
  entries_.push_back(std::move(entry));
}

int64_t tensor_layer_index(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int64_t n = 0;
  size_t i = 4;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 14; ++i) n = n * 10 + (name[i] - '0');
  return (i == 4 || i >= name.size() || name[i] != '.') ? -1 : n;
}

Shape expected_tensor_shape(const ModelConfig& c, const std::string& name) {
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  if (name == "token_embd.weight" || name == "output.weight") return {c.vocab_size, c.hidden};
  if (name == "output_norm.weight") return {c.hidden};
  if (tensor_layer_index(name) < 0) return {};
  const std::string rest = name.substr(name.find('.', 4) + 1);
  if (rest == "attn_norm.weight" || rest == "ffn_norm.weight") return {c.hidden};
  if (rest == "attn_q.weight") return {q, c.hidden};
  if (rest == "attn_k.weight" || rest == "attn_v.weight") return {kv, c.hidden};
  if (rest == "attn_q.bias") return {q};
  if (rest == "attn_k.bias" || rest == "attn_v.bias") return {kv};
  if (rest == "attn_output.weight") return {c.hidden, q};
  if (rest == "ffn_gate.weight" || rest == "ffn_up.weight") return {c.ffn, c.hidden};
  if (rest == "ffn_down.weight") return {c.hidden, c.ffn};
  if (rest == "attn_q_norm.weight" || rest == "attn_k_norm.weight") return {c.head_dim};
  if (!c.moe.enabled()) return {};
  const MoeConfig& m = c.moe;
  if (rest == "ffn_gate_inp.weight") return {m.n_experts, c.hidden};
  if (rest == "ffn_gate_shexp.weight" || rest == "ffn_up_shexp.weight") return {m.shared_ffn, c.hidden};
  if (rest == "ffn_down_shexp.weight") return {c.hidden, m.shared_ffn};
  if (rest == "ffn_gate_inp_shexp.weight") return {1, c.hidden};
  // Routed experts: "ffn_gate.<expert>.weight".
  for (const char* proj : {"ffn_gate.", "ffn_up.", "ffn_down."}) {
    const std::string p = proj;
    if (rest.rfind(p, 0) != 0 || rest.size() <= p.size() + 7) continue;
    const std::string index = rest.substr(p.size(), rest.size() - p.size() - 7);
    if (rest.compare(rest.size() - 7, 7, ".weight") != 0 ||
        index.find_first_not_of("0123456789") != std::string::npos || std::stoll(index) >= m.n_experts)
      return {};
    return p == "ffn_down." ? Shape{c.hidden, m.expert_ffn} : Shape{m.expert_ffn, c.hidden};
  }
  return {};
}

std::vector<std::string> required_tensor_names(const ModelConfig& c) {
  std::vector<std::string> names = {"token_embd.weight"};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = cat("blk.", l, ".");
    for (const char* t : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight"}) names.push_back(p + t);
    if (c.qkv_bias)
      for (const char* t : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) names.push_back(p + t);
    if (c.qk_norm)
      for (const char* t : {"attn_q_norm.weight", "attn_k_norm.weight"}) names.push_back(p + t);
    for (const char* t : {"attn_output.weight", "ffn_norm.weight"}) names.push_back(p + t);
    if (!c.moe.sparse_layer(l)) {
      for (const char* t : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) names.push_back(p + t);
      continue;
    }
    names.push_back(p + "ffn_gate_inp.weight");
    for (int64_t e = 0; e < c.moe.n_experts; ++e)
      for (const char* t : {"ffn_gate.", "ffn_up.", "ffn_down."}) names.push_back(cat(p, t, e, ".weight"));
    if (c.moe.shared_ffn > 0)
      for (const char* t : {"ffn_gate_inp_shexp.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight",
                            "ffn_down_shexp.weight"})
        names.push_back(p + t);
  }
  names.push_back("output_norm.weight");
  if (!c.tied_embeddings) names.push_back("output.weight");
  return names;
}

void CheckpointBuilder::finish() {
  config_.validate(config_source_);
  for (const auto& e : entries_) {
    auto file = file_of(e);
    // Parsers check bounds already; this is the one place every format passes through.
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.offset <= file->size() && e.nbytes <= file->size() - e.offset, e.file,
                      ": tensor '", e.file_name, "' spans bytes [", e.offset, ", ", e.offset + e.nbytes,
                      ") but the file has ", file->size(), " bytes; the file is truncated or its header is corrupt");
    const int64_t layer = tensor_layer_index(e.name);
    STRATA_CHECK_KIND(ErrorKind::kFormat, layer < config_.n_layers, e.file, ": tensor '", e.file_name,
                      "' belongs to layer ", layer, " but ", config_source_, " declares ", config_.n_layers,
                      " layers");
  }
  // Model order (embedding, layer 0 ...), so the first complaint is the same whatever the file order.
  const std::vector<std::string> required = required_tensor_names(config_);
  std::vector<std::string> names = required;
  for (const auto& e : entries_)
    if (std::find(required.begin(), required.end(), e.name) == required.end()) names.push_back(e.name);
  for (const auto& name : names) {
    if (!has(name)) {
      std::string hint;
      if (name == "output.weight") hint = " (the config says the output head is not tied to the embedding)";
      if (name.find(".bias") != std::string::npos) hint = " (q/k/v biases are required by architecture " + config_.arch + ")";
      const std::string native = native_name_ ? native_name_(name) : name;
      if (native != name) hint = " ('" + native + "' in this format)" + hint;
      STRATA_THROW(ErrorKind::kFormat, path_, ": tensor '", name, "' is missing", hint, "; ", config_source_,
                   " declares ", config_.n_layers, " layers, so the checkpoint is incomplete or its config is wrong");
    }
    const TensorEntry& e = entry(name);
    const Shape want = expected_tensor_shape(config_, e.name);
    if (want.empty()) continue;  // not a tensor the model reads (rope_freqs.weight, ...)
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.shape == want, e.file, ": tensor '", e.file_name, "' (", e.name,
                      ") has shape ", shape_str(e.shape), " but the model config from ", config_source_,
                      " (hidden ", config_.hidden, ", heads ", config_.n_heads, "/", config_.n_kv_heads, " x head_dim ",
                      config_.head_dim, ", ffn ", config_.ffn, ", vocab ", config_.vocab_size, ") needs ",
                      shape_str(want), "; the config does not describe these weights");
    const bool is_vector = want.size() == 1;
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      !is_vector || e.dtype == DType::kF32 || e.dtype == DType::kF16 || e.dtype == DType::kBF16,
                      e.file, ": tensor '", e.file_name, "' (", e.name, ") is ", dtype_name(e.dtype),
                      "; norm weights and biases must be f32, f16 or bf16");
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.dtype != DType::kI8 && e.dtype != DType::kI32, e.file, ": tensor '",
                      e.file_name, "' (", e.name, ") has integer dtype ", dtype_name(e.dtype),
                      "; weights must be float or q8_0/q4_0");
  }
}

// ---- open_checkpoint ----

std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  STRATA_CHECK_KIND(ErrorKind::kIo, !ec && fs::exists(status), "checkpoint '", path,
                    "' does not exist; pass a Hugging Face model directory, a .gguf file or a llama2.c .bin");
  if (fs::is_directory(status)) return open_hf_checkpoint(path);
  // Dispatch on content, not the extension: a renamed GGUF still opens.
  uint8_t magic[4] = {0, 0, 0, 0};
  {
    MappedFile file(path);
    if (file.size() >= 4) std::memcpy(magic, file.data(), 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return open_gguf_checkpoint(path);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".gguf")
    STRATA_THROW(ErrorKind::kFormat, path, ": not a GGUF file (bad magic; expected 'GGUF' in the first 4 bytes)");
  if (ext == ".safetensors")
    STRATA_THROW(ErrorKind::kFormat, path, ": open the model directory (with config.json), not the .safetensors file");
  return open_llama2c_checkpoint(path);
}

}  // namespace strata
