// runtime/formats/checkpoint_builder.h: how a format reader assembles a Checkpoint (internal to
// runtime/formats). The reader adds files and entries, sets the config, then finish() checks
// every tensor against the files' bounds and the config's shapes.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "runtime/formats/checkpoint.h"
#include "runtime/formats/mapped_file.h"

namespace strata {

class CheckpointBuilder : public Checkpoint {
 public:
  CheckpointBuilder(std::string path, std::string format);

  ModelConfig& mutable_config() { return config_; }
  void set_tokenizer(std::optional<TokenizerData> tokenizer) { tokenizer_ = std::move(tokenizer); }
  // Where the config came from, for messages ("config.json", "GGUF metadata", ".bin header").
  void set_config_source(std::string source) { config_source_ = std::move(source); }
  // The tensor's name inside the files, for messages about missing tensors (HF names differ).
  void set_native_name(std::function<std::string(const std::string&)> f) { native_name_ = std::move(f); }
  void add_file(std::shared_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  // What builds the entries marked built_on_access.
  void set_lazy(std::shared_ptr<LazyTensors> lazy) { lazy_ = std::move(lazy); }
  // Throws kFormat when `entry.name` is already present (two tensors mapping to one name).
  void add_entry(TensorEntry entry);
  // Validates the config, every entry's bounds and size, and the shapes the config implies.
  // Tensors the model needs but the file lacks, and shapes that disagree, throw kFormat naming
  // the file and the tensor (by its name inside the file and its canonical name).
  void finish();

 private:
  std::string config_source_;
  std::function<std::string(const std::string&)> native_name_;
};

}  // namespace strata
