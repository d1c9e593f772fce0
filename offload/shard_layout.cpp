// offload/shard_layout.cpp: slicing of checkpoint entries into byte segments per rank.
#include "offload/shard_layout.h"

#include <cstring>

#include "runtime/error.h"

namespace strata::offload {

namespace {

ShardTensor rows_of(const Checkpoint& ck, const TensorRef& ref, int64_t begin, int64_t count) {
  const std::string& name = ref.name;
  ShardTensor t;
  t.ref = ref;
  t.entry = &ck.entry(name);
  t.dtype = t.entry->dtype;
  const int64_t total = t.entry->shape.empty() ? 1 : t.entry->shape[0];
  if (count < 0) begin = 0, count = total;
  STRATA_CHECK(begin >= 0 && count >= 0 && begin + count <= total, ck.path(), ": rows [", begin, ", ", begin + count,
               ") of tensor '", name, "' are out of range for shape ", shape_str(t.entry->shape));
  const uint64_t row_bytes = total == 0 ? 0 : t.entry->nbytes / static_cast<uint64_t>(total);
  t.shape = t.entry->shape.empty() ? Shape{1} : t.entry->shape;
  t.shape[0] = count;
  t.row_begin = begin, t.rows = count;
  t.nbytes = static_cast<int64_t>(row_bytes) * count;
  t.segments.push_back({t.entry->offset + row_bytes * static_cast<uint64_t>(begin), t.nbytes, 0});
  return t;
}

ShardTensor cols_of(const Checkpoint& ck, const TensorRef& ref, int64_t begin, int64_t count) {
  const std::string& name = ref.name;
  const TensorEntry& e = ck.entry(name);
  STRATA_CHECK_KIND(ErrorKind::kFormat, e.shape.size() == 2, e.file, ": tensor ", e.file_name, " should be 2-D, is ",
                    shape_str(e.shape));
  const int64_t n = e.shape[0], k = e.shape[1];
  if (begin == 0 && count == k) return rows_of(ck, ref, -1, -1);
  const int64_t block = dtype_block_elems(e.dtype);
  STRATA_CHECK_KIND(ErrorKind::kConfig, begin % block == 0 && count % block == 0, "tensor ", name, " (",
                    dtype_name(e.dtype), ") cannot be split at column ", begin, ": quantized blocks hold ", block,
                    " columns; choose a tensor-parallel size that keeps each slice a multiple of ", block);
  ShardTensor t;
  t.ref = ref, t.entry = &e, t.dtype = e.dtype;
  t.column_slice = true;
  t.shape = {n, count};
  const int64_t src_row = dtype_bytes(e.dtype, k), dst_row = dtype_bytes(e.dtype, count);
  const int64_t skip = dtype_bytes(e.dtype, begin);
  t.nbytes = dst_row * n;
  t.segments.reserve(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r)
    t.segments.push_back({e.offset + static_cast<uint64_t>(r * src_row + skip), dst_row, r * dst_row});
  return t;
}

}  // namespace

std::vector<ShardTensor> shard_tensors(const Checkpoint& ck, const ShardSpec& spec) {
  std::vector<ShardTensor> out;
  const ModelConfig& c = ck.config();
  for (const TensorRef& ref : rank_tensors(c, spec)) {
    const SliceRange r = slot_slice(*ref.slot, c, spec);
    switch (ref.slot->split) {
      case TpSplit::kReplicated:
      case TpSplit::kExpert: out.push_back(rows_of(ck, ref, -1, -1)); break;
      case TpSplit::kRows: out.push_back(rows_of(ck, ref, r.offset, r.count)); break;
      case TpSplit::kCols: out.push_back(cols_of(ck, ref, r.offset, r.count)); break;
    }
  }
  return out;
}

Tensor mapped_slice(const Checkpoint& ck, const ShardTensor& t) {
  if (!t.column_slice) return ck.tensor_rows(t.ref.name, t.row_begin, t.rows);
  Tensor out = Tensor::empty(t.shape, t.dtype);
  copy_mapped_slice(ck, t, out.raw());
  return out;
}

void copy_mapped_slice(const Checkpoint& ck, const ShardTensor& t, void* dst) {
  const Tensor full = ck.tensor(t.ref.name);  // checks the file under the mapping first
  const auto* base = static_cast<const uint8_t*>(full.raw()) - t.entry->offset;
  for (const Segment& s : t.segments)
    std::memcpy(static_cast<uint8_t*>(dst) + s.dst_offset, base + s.file_offset, static_cast<size_t>(s.bytes));
}

}  // namespace strata::offload
