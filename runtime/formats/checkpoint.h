// runtime/formats/checkpoint.h: a memory-mapped model checkpoint, whatever its format (Hugging Face
// safetensors directory, GGUF, llama2.c .bin). Tensors are exposed under canonical GGUF-style names
// with logical row-major shapes ([out, in] for linear weights) and point into the mapping: nothing
// is read until a caller touches the bytes, so a rank reads only its own shards.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/tensor.h"
#include "runtime/tokenizer/tokenizer_data.h"

namespace strata {

// Canonical tensor names (GGUF's): "token_embd.weight", "output_norm.weight", "output.weight",
// "blk.N.attn_norm.weight", "blk.N.attn_q.weight", "blk.N.attn_k.weight", "blk.N.attn_v.weight",
// "blk.N.attn_q.bias", "blk.N.attn_k.bias", "blk.N.attn_v.bias", "blk.N.attn_output.weight",
// "blk.N.ffn_norm.weight", "blk.N.ffn_gate.weight", "blk.N.ffn_up.weight", "blk.N.ffn_down.weight".
struct TensorEntry {
  std::string name;       // canonical name
  std::string file;       // file the bytes live in (for error messages)
  std::string file_name;  // the name inside that file
  DType dtype = DType::kF32;
  Shape shape;            // logical row-major
  uint64_t offset = 0;    // byte offset inside `file`
  uint64_t nbytes = 0;
  // A static activation scale of an FP8 / W8A8 layer (input_scale), recorded from the checkpoint; strata
  // computes with float activations (weight-only quantization), so nothing reads it yet.
  std::optional<float> input_scale;
  // The bytes are built on first access (LazyTensors) into `file`, an in-memory file, rather than mapped as
  // they are: a reader of `offset` must call Checkpoint::materialize first.
  bool built_on_access = false;
};

class MappedFile;

// Tensors a format builds from others on first access instead of mapping them (the transcoded layers of a
// quantized Hugging Face checkpoint, hf_quant.h), so opening a checkpoint for its config or a rank's share
// costs only what is read. pin() builds an entry's bytes into its file unless they are there, and they stay
// until the last pin of that entry goes: then the memory is handed back and the next pin builds the same bytes
// again. So once a backend has its own copy (a device upload, the CPU's repacked layout) and drops its view,
// a rank no longer holds the weights twice, while a reader that keeps a view or a pin (the CPU computing on the
// mapping, the offload disk tier reading by offset) keeps them. A failed build (bad content, naming the tensor)
// throws and leaves the entry unbuilt. Thread-safe.
class LazyTensors {
 public:
  virtual ~LazyTensors() = default;
  virtual std::shared_ptr<void> pin(const TensorEntry& entry) = 0;
  virtual uint64_t tensors_built() const = 0;  // builds so far, a rebuild after a release counted again
  virtual uint64_t bytes_built() const = 0;
  virtual uint64_t bytes_held() const = 0;  // built bytes in memory now (pinned entries')
};

// How open_checkpoint reads: `threads` build a lazily built tensor (transcoding its rows in parallel; the bytes
// do not depend on the count). 0: one per hardware thread.
struct CheckpointOptions {
  int threads = 1;
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;
  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }
  const std::string& format() const { return format_; }  // "safetensors" | "gguf" | "llama2c"
  const std::vector<TensorEntry>& entries() const { return entries_; }

  bool has(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;  // throws kFormat naming file and tensor
  // A view of the whole tensor inside the mapping (kept alive by the returned tensor).
  Tensor tensor(const std::string& name) const;
  // Rows [row0, row0+rows) of a tensor, as a view (rows are contiguous in row-major storage).
  Tensor tensor_rows(const std::string& name, int64_t row0, int64_t rows) const;
  // Bytes of mapped tensor data touched through tensor()/tensor_rows() so far (for --verbose and
  // the test that each TP rank reads about 1/TP of the sharded tensors).
  uint64_t bytes_touched() const { return bytes_touched_; }
  void add_bytes_touched(uint64_t n) const { bytes_touched_ += n; }
  // Builds a built_on_access tensor's bytes in its file and returns a pin that keeps them there (for others,
  // the file). tensor() and tensor_rows() do it and their views hold the pin; a reader that goes to the file by
  // offset (the offload disk tier) calls it first and keeps the pin for as long as it reads.
  std::shared_ptr<void> materialize(const std::string& name) const;
  // Tensors and bytes built on first access so far, and the built bytes held now (0 when every tensor is
  // mapped as it is).
  uint64_t tensors_built() const { return lazy_ ? lazy_->tensors_built() : 0; }
  uint64_t bytes_built() const { return lazy_ ? lazy_->bytes_built() : 0; }
  uint64_t bytes_held() const { return lazy_ ? lazy_->bytes_held() : 0; }

  // The tokenizer, when the checkpoint has one (embedded in GGUF, tokenizer.json or tokenizer.model
  // beside safetensors, tokenizer.bin beside a llama2.c checkpoint).
  const std::optional<TokenizerData>& tokenizer() const { return tokenizer_; }

 protected:
  ModelConfig config_;
  std::string path_;
  std::string format_;
  std::vector<TensorEntry> entries_;
  std::vector<std::shared_ptr<MappedFile>> files_;  // indexed by TensorEntry::file lookup
  std::optional<TokenizerData> tokenizer_;
  std::shared_ptr<LazyTensors> lazy_;  // builds the built_on_access entries
  mutable uint64_t bytes_touched_ = 0;

  std::shared_ptr<MappedFile> file_of(const TensorEntry& entry) const;
};

// Opens `path`: a directory with config.json + model.safetensors (or an index of shards), a .gguf
// file, or a llama2.c .bin (tokenizer.bin or tok*.bin beside it). Validates every tensor's bounds,
// dtype and shape against the config; errors name the file and the tensor.
std::unique_ptr<Checkpoint> open_checkpoint(const std::string& path, const CheckpointOptions& options = {});

}  // namespace strata
