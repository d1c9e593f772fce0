// offload/shard_layout.h: one rank's weight shards as byte ranges of the checkpoint files, so the
// disk tier can read exactly this rank's slices with pread (no page faults on the mapping) and the
// host tier can copy them once. The same slicing as runtime/weights.cpp's ShardReader: row slices
// are one range, column slices (row-parallel weights) one range per row.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/formats/checkpoint.h"
#include "runtime/shard_spec.h"
#include "runtime/tensor.h"
#include "runtime/weights.h"

namespace strata::offload {

// Fields of LayerWeights by index (the order of the struct) and of GlobalWeights.
constexpr int kLayerFields = 12;
Tensor& layer_field(LayerWeights& w, int field);
constexpr int kGlobalEmbed = 0, kGlobalOutputNorm = 1, kGlobalOutput = 2;

struct Segment {
  uint64_t file_offset = 0;  // in the tensor's file
  int64_t bytes = 0;
  int64_t dst_offset = 0;    // in the shard's packed bytes
};

struct ShardTensor {
  std::string name;  // canonical
  int64_t layer = -1;
  int field = 0;     // layer_field() index, or kGlobal* for layer -1
  DType dtype = DType::kF32;
  Shape shape;       // of this rank's slice
  int64_t nbytes = 0;
  const TensorEntry* entry = nullptr;
  bool column_slice = false;  // gathered row by row (kCols); else a view of rows of the mapping
  int64_t row_begin = 0, rows = 0;  // the row range when !column_slice
  std::vector<Segment> segments;
};

// This rank's tensors: globals (embedding on the first stage, norm + head on the last; a tied head
// appears once, as the embedding), then each layer of the stage in field order. Biases only when
// the model has them.
std::vector<ShardTensor> shard_tensors(const Checkpoint& checkpoint, const ShardSpec& spec, bool* tied_head);

// The slice as a host tensor read from the memory map: a zero-copy view for row slices, a gathered
// copy for column slices. Checks the mapped file is intact first.
Tensor mapped_slice(const Checkpoint& checkpoint, const ShardTensor& t);
// Copies the slice's bytes from the memory map into `dst` (nbytes).
void copy_mapped_slice(const Checkpoint& checkpoint, const ShardTensor& t, void* dst);

}  // namespace strata::offload
