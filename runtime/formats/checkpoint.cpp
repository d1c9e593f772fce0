// runtime/formats/checkpoint.cpp: tensor lookup and views into the mapping, the checks shared by
// every format (CheckpointBuilder::finish), and open_checkpoint's dispatch on what `path` is.
#include "runtime/formats/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "runtime/error.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/llama2c.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/models/model_description.h"

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

std::shared_ptr<void> Checkpoint::materialize(const std::string& name) const {
  const TensorEntry& e = entry(name);
  if (!e.built_on_access) return file_of(e);
  STRATA_CHECK_KIND(ErrorKind::kInternal, lazy_ != nullptr, path_, ": tensor '", name, "' is built on access but ",
                    "the checkpoint has nothing to build it");
  return lazy_->pin(e);
}

Tensor Checkpoint::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  std::shared_ptr<void> owner = materialize(name);  // the file, or the pin that keeps a built entry's bytes
  auto file = file_of(e);
  // A file truncated under the mapping would SIGBUS on first touch; fail here with a message.
  file->check_intact();
  add_bytes_touched(e.nbytes);
  void* p = const_cast<uint8_t*>(file->data()) + e.offset;
  return Tensor::view(p, e.shape, e.dtype, Device::kCpu, std::shared_ptr<void>(std::move(owner), p));
}

Tensor Checkpoint::tensor_rows(const std::string& name, int64_t row0, int64_t rows) const {
  const TensorEntry& e = entry(name);
  const int64_t total = e.shape.empty() ? 1 : e.shape[0];
  STRATA_CHECK(row0 >= 0 && rows >= 0 && row0 <= total && rows <= total - row0, path_, ": rows [", row0, ", ",
               row0 + rows, ") of tensor '", name, "' are out of range for shape ", shape_str(e.shape));
  const uint64_t row_bytes = total == 0 ? 0 : e.nbytes / static_cast<uint64_t>(total);
  STRATA_CHECK(e.shape.size() >= 2 || !dtype_is_quantized(e.dtype), path_, ": tensor '", name,
               "' is a 1-D quantized tensor; its rows are not addressable");
  std::shared_ptr<void> owner = materialize(name);
  auto file = file_of(e);
  file->check_intact();
  add_bytes_touched(row_bytes * static_cast<uint64_t>(rows));
  Shape shape = e.shape.empty() ? Shape{1} : e.shape;
  shape[0] = rows;
  void* p = const_cast<uint8_t*>(file->data()) + e.offset + row_bytes * static_cast<uint64_t>(row0);
  return Tensor::view(p, std::move(shape), e.dtype, Device::kCpu, std::shared_ptr<void>(std::move(owner), p));
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
  std::vector<std::string> names;
  for (const TensorRef& t : model_tensors(config_)) names.push_back(t.name);
  const std::set<std::string> required(names.begin(), names.end());
  for (const auto& e : entries_)
    if (required.count(e.name) == 0) names.push_back(e.name);
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
    const TensorSlot* slot = find_slot(config_, e.name);
    if (slot == nullptr) continue;  // not a tensor the model reads (rope_freqs.weight, ...)
    const Shape want = slot->full_shape(config_);
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.shape == want, e.file, ": tensor '", e.file_name, "' (", e.name,
                      ") has shape ", shape_str(e.shape), " but the model config from ", config_source_,
                      " (hidden ", config_.hidden, ", heads ", config_.n_heads, "/", config_.n_kv_heads, " x head_dim ",
                      config_.head_dim, ", ffn ", config_.ffn, ", vocab ", config_.vocab_size, ") needs ",
                      shape_str(want), "; the config does not describe these weights");
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      slot->may_quantize() || e.dtype == DType::kF32 || e.dtype == DType::kF16 || e.dtype == DType::kBF16,
                      e.file, ": tensor '", e.file_name, "' (", e.name, ") is ", dtype_name(e.dtype),
                      "; norm weights and biases must be f32, f16 or bf16");
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.dtype != DType::kI8 && e.dtype != DType::kI32, e.file, ": tensor '",
                      e.file_name, "' (", e.name, ") has integer dtype ", dtype_name(e.dtype),
                      "; weights must be float or q8_0/q4_0");
  }
}

// ---- open_checkpoint ----

std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path, const CheckpointOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(path, ec);
  STRATA_CHECK_KIND(ErrorKind::kIo, !ec && fs::exists(status), "checkpoint '", path,
                    "' does not exist; pass a Hugging Face model directory, a .gguf file or a llama2.c .bin");
  if (fs::is_directory(status)) return open_hf_checkpoint(path, options);
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
