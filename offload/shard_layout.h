// offload/shard_layout.h: one rank's weight shards as byte ranges of the checkpoint files, so the
// disk tier can read exactly this rank's slices with pread (no page faults on the mapping) and the
// host tier can copy them once. Which tensors and which slices come from the model description
// (runtime/models/model_description.h), as for runtime/weights.cpp's ShardReader: row slices are one
// range, column slices (row-parallel weights) one range per row.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/formats/checkpoint.h"
#include "runtime/models/model_description.h"
#include "runtime/shard_spec.h"
#include "runtime/tensor.h"
#include "runtime/weights.h"

namespace strata::offload {

struct Segment {
  uint64_t file_offset = 0;  // in the tensor's file
  int64_t bytes = 0;
  int64_t dst_offset = 0;    // in the shard's packed bytes
};

struct ShardTensor {
  TensorRef ref;     // canonical name, layer (-1 for globals) and slot (where the model reads it)
  DType dtype = DType::kF32;
  Shape shape;       // of this rank's slice
  int64_t nbytes = 0;
  const TensorEntry* entry = nullptr;
  bool column_slice = false;  // gathered row by row (kCols); else a view of rows of the mapping
  int64_t row_begin = 0, rows = 0;  // the row range when !column_slice
  std::vector<Segment> segments;
};

// This rank's tensors in model order (rank_tensors: a tied head appears once, as the embedding).
std::vector<ShardTensor> shard_tensors(const Checkpoint& checkpoint, const ShardSpec& spec);

// The slice as a host tensor read from the memory map: a zero-copy view for row slices, a gathered
// copy for column slices. Checks the mapped file is intact first.
Tensor mapped_slice(const Checkpoint& checkpoint, const ShardTensor& t);
// Copies the slice's bytes from the memory map into `dst` (nbytes).
void copy_mapped_slice(const Checkpoint& checkpoint, const ShardTensor& t, void* dst);

}  // namespace strata::offload
