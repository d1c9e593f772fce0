// tests/runtime/vision/mmproj_pair.h: what the llama.cpp GGUF pair tests share: a session over a model GGUF and
// its mmproj, a copy of an mmproj with its metadata and tensor list edited (the bad files users meet), and the
// metadata edits.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "test_util.h"

namespace strata::test {

inline launcher::SessionOptions pair_options(const std::string& text_gguf, const std::string& mmproj) {
  launcher::SessionOptions options;
  options.model_path = text_gguf;
  options.mmproj_path = mmproj;
  options.threads = 1;
  return options;
}

using Metadata = std::vector<std::pair<std::string, GgufValue>>;
using Tensors = std::vector<std::pair<std::string, Tensor>>;

// A copy of `mmproj` with its metadata and tensor list edited, written as temp_dir(dir)/name.gguf.
inline std::string edited_mmproj(const std::string& mmproj, const std::string& dir, const std::string& name,
                                 const std::function<void(Metadata&, Tensors&)>& edit) {
  auto file = std::make_shared<MappedFile>(mmproj);
  const GgufFile gguf = parse_gguf_buffer(file->data(), file->size(), mmproj);
  Metadata metadata = gguf.metadata;
  Tensors tensors;
  for (const GgufTensorInfo& t : gguf.tensors)
    tensors.emplace_back(t.name, Tensor::view(const_cast<uint8_t*>(file->data() + t.offset), t.shape, t.dtype,
                                              Device::kCpu, file));
  edit(metadata, tensors);
  const std::string path = temp_dir(dir) + "/" + name + ".gguf";
  write_gguf(path, metadata, tensors);
  return path;
}

inline void set_key(Metadata& m, const std::string& key, GgufValue value) {
  for (auto& [k, v] : m)
    if (k == key) {
      v = std::move(value);
      return;
    }
  m.emplace_back(key, std::move(value));
}

inline void drop_key(Metadata& m, const std::string& key) {
  std::erase_if(m, [&](const auto& kv) { return kv.first == key; });
}

}  // namespace strata::test
