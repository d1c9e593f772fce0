// runtime/formats/tensor_stream.h: streaming tensors into a new checkpoint file. Tensors are
// produced in row chunks by a pure `fill` function, in parallel, and written while the next chunk
// is generated, so a 13 GB model never sits in memory. Shared by the safetensors and GGUF writers.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

// One tensor to write. `fill(row0, rows, dst)` writes rows [row0, row0+rows) of the tensor (dim 0;
// a 1-D tensor's rows are its elements) in `dtype` to dst. It is called concurrently from several
// threads on disjoint ranges, so it must be a pure function of its arguments.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  std::function<void(int64_t row0, int64_t rows, uint8_t* dst)> fill;

  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  uint64_t nbytes() const { return static_cast<uint64_t>(dtype_bytes(dtype, shape_numel(shape))); }
};

// A spec that copies an existing host tensor (for tests and converters).
TensorSpec tensor_spec_of(std::string name, const Tensor& tensor);
std::vector<TensorSpec> tensor_specs_of(const std::vector<std::pair<std::string, Tensor>>& tensors);

// A file being written: writes to "<path>.partial" and renames onto `path` in commit(), so an
// interrupted writer never leaves a file that looks complete. Errors are kIo naming the path.
class FileSink {
 public:
  explicit FileSink(std::string path);
  ~FileSink();  // removes the partial file unless committed; never throws
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  void write(const void* data, size_t bytes);
  void pad_to(uint64_t alignment, uint8_t byte = 0);
  uint64_t offset() const { return offset_; }
  // Streams `spec`'s bytes (generated with up to `threads` threads; 0 = all cores).
  void write_tensor(const TensorSpec& spec, int threads);
  void commit();

 private:
  std::string path_;
  std::string partial_;
  std::FILE* file_ = nullptr;
  uint64_t offset_ = 0;
};

}  // namespace strata
