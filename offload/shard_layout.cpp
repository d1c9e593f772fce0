// offload/shard_layout.cpp: slicing of checkpoint entries into byte segments per rank.
#include "offload/shard_layout.h"

#include <cstring>

#include "runtime/error.h"

namespace strata::offload {

Tensor& layer_field(LayerWeights& w, int field) {
  Tensor* fields[kLayerFields] = {&w.attn_norm, &w.wq, &w.wk, &w.wv, &w.bq, &w.bk,
                                  &w.bv, &w.wo, &w.ffn_norm, &w.w_gate, &w.w_up, &w.w_down};
  STRATA_CHECK_KIND(ErrorKind::kInternal, field >= 0 && field < kLayerFields, "no layer field ", field);
  return *fields[field];
}

namespace {

ShardTensor rows_of(const Checkpoint& ck, const std::string& name, int64_t layer, int field, int64_t begin,
                    int64_t count) {
  ShardTensor t;
  t.name = name, t.layer = layer, t.field = field;
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

ShardTensor cols_of(const Checkpoint& ck, const std::string& name, int64_t layer, int field, int64_t begin,
                    int64_t count) {
  const TensorEntry& e = ck.entry(name);
  STRATA_CHECK_KIND(ErrorKind::kFormat, e.shape.size() == 2, e.file, ": tensor ", e.file_name, " should be 2-D, is ",
                    shape_str(e.shape));
  const int64_t n = e.shape[0], k = e.shape[1];
  if (begin == 0 && count == k) return rows_of(ck, name, layer, field, -1, -1);
  const int64_t block = dtype_block_elems(e.dtype);
  STRATA_CHECK_KIND(ErrorKind::kConfig, begin % block == 0 && count % block == 0, "tensor ", name, " (",
                    dtype_name(e.dtype), ") cannot be split at column ", begin, ": quantized blocks hold ", block,
                    " columns; choose a tensor-parallel size that keeps each slice a multiple of ", block);
  ShardTensor t;
  t.name = name, t.layer = layer, t.field = field, t.entry = &e, t.dtype = e.dtype;
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

std::vector<ShardTensor> shard_tensors(const Checkpoint& ck, const ShardSpec& spec, bool* tied_head) {
  std::vector<ShardTensor> out;
  const ModelConfig& c = ck.config();
  const bool tied = !ck.has("output.weight");
  if (tied_head != nullptr) *tied_head = tied && spec.last_stage;
  if (spec.first_stage || (spec.last_stage && tied))
    out.push_back(rows_of(ck, "token_embd.weight", -1, kGlobalEmbed, spec.vocab_begin, spec.vocab_count));
  if (spec.last_stage) {
    out.push_back(rows_of(ck, "output_norm.weight", -1, kGlobalOutputNorm, -1, -1));
    if (!tied) out.push_back(rows_of(ck, "output.weight", -1, kGlobalOutput, spec.vocab_begin, spec.vocab_count));
  }
  const int64_t hd = c.head_dim;
  for (int64_t l = spec.layer_begin; l < spec.layer_end; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    out.push_back(rows_of(ck, p + "attn_norm.weight", l, 0, -1, -1));
    out.push_back(rows_of(ck, p + "attn_q.weight", l, 1, spec.q_head_begin * hd, spec.q_heads * hd));
    out.push_back(rows_of(ck, p + "attn_k.weight", l, 2, spec.kv_head_begin * hd, spec.kv_heads * hd));
    out.push_back(rows_of(ck, p + "attn_v.weight", l, 3, spec.kv_head_begin * hd, spec.kv_heads * hd));
    if (c.qkv_bias) {
      out.push_back(rows_of(ck, p + "attn_q.bias", l, 4, spec.q_head_begin * hd, spec.q_heads * hd));
      out.push_back(rows_of(ck, p + "attn_k.bias", l, 5, spec.kv_head_begin * hd, spec.kv_heads * hd));
      out.push_back(rows_of(ck, p + "attn_v.bias", l, 6, spec.kv_head_begin * hd, spec.kv_heads * hd));
    }
    out.push_back(cols_of(ck, p + "attn_output.weight", l, 7, spec.q_head_begin * hd, spec.q_heads * hd));
    out.push_back(rows_of(ck, p + "ffn_norm.weight", l, 8, -1, -1));
    out.push_back(rows_of(ck, p + "ffn_gate.weight", l, 9, spec.ffn_begin, spec.ffn_count));
    out.push_back(rows_of(ck, p + "ffn_up.weight", l, 10, spec.ffn_begin, spec.ffn_count));
    out.push_back(cols_of(ck, p + "ffn_down.weight", l, 11, spec.ffn_begin, spec.ffn_count));
  }
  return out;
}

Tensor mapped_slice(const Checkpoint& ck, const ShardTensor& t) {
  if (!t.column_slice) return ck.tensor_rows(t.name, t.row_begin, t.rows);
  Tensor out = Tensor::empty(t.shape, t.dtype);
  copy_mapped_slice(ck, t, out.raw());
  return out;
}

void copy_mapped_slice(const Checkpoint& ck, const ShardTensor& t, void* dst) {
  const Tensor full = ck.tensor(t.name);  // checks the file under the mapping first
  const auto* base = static_cast<const uint8_t*>(full.raw()) - t.entry->offset;
  for (const Segment& s : t.segments)
    std::memcpy(static_cast<uint8_t*>(dst) + s.dst_offset, base + s.file_offset, static_cast<size_t>(s.bytes));
}

}  // namespace strata::offload
