// runtime/weights.cpp: slicing of checkpoint tensors into TP shards and the all-resident source.
#include "runtime/weights.h"

#include <cstring>

#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/models/model_description.h"

namespace strata {

int64_t LayerWeights::nbytes() const {
  int64_t n = 0;
  // Fused stacks are counted through their row views (wq, wk, ...), not twice.
  for (const Tensor* t : {&attn_norm, &wq, &wk, &wv, &bq, &bk, &bv, &wo, &q_norm, &k_norm, &ffn_norm, &w_gate, &w_up,
                          &w_down, &router, &shared_gate, &shared_up, &shared_down, &shared_router})
    if (t->defined()) n += t->nbytes();
  return n + routed_expert_nbytes();
}

int64_t LayerWeights::routed_expert_nbytes() const {
  int64_t n = 0;
  for (const auto* experts : {&expert_gate, &expert_up, &expert_down})
    for (const Tensor& t : *experts) n += t.nbytes();
  return n;
}

ShardReader::ShardReader(const Checkpoint& checkpoint, const ShardSpec& spec) : checkpoint_(checkpoint), spec_(spec) {}

Tensor ShardReader::rows(const std::string& name, int64_t begin, int64_t count) const {
  return checkpoint_.tensor_rows(name, begin, count);
}

Tensor ShardReader::cols(const std::string& name, int64_t begin, int64_t count) const {
  const TensorEntry& e = checkpoint_.entry(name);
  STRATA_CHECK_KIND(ErrorKind::kFormat, e.shape.size() == 2, e.file, ": tensor ", e.file_name, " should be 2-D, is ",
                    shape_str(e.shape));
  const int64_t n = e.shape[0], k = e.shape[1];
  if (begin == 0 && count == k) return checkpoint_.tensor(name);
  const int64_t block = dtype_block_elems(e.dtype);
  STRATA_CHECK_KIND(ErrorKind::kConfig, begin % block == 0 && count % block == 0, "tensor ", name, " (",
                    dtype_name(e.dtype), ") cannot be split at column ", begin, ": quantized blocks hold ", block,
                    " columns; choose a tensor-parallel size that keeps each slice a multiple of ", block);
  const Tensor full = checkpoint_.tensor(name);
  Tensor out = Tensor::empty({n, count}, e.dtype);
  const int64_t src_row = dtype_bytes(e.dtype, k), dst_row = dtype_bytes(e.dtype, count);
  const int64_t skip = dtype_bytes(e.dtype, begin);
  const auto* src = static_cast<const uint8_t*>(full.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(dst + r * dst_row, src + r * src_row + skip, static_cast<size_t>(dst_row));
  return out;
}

Tensor ShardReader::slice(const TensorRef& t) const {
  const ModelConfig& c = checkpoint_.config();
  const SliceRange r = slot_slice(*t.slot, c, spec_);
  switch (t.slot->split) {
    case TpSplit::kReplicated:
    case TpSplit::kExpert: return checkpoint_.tensor(t.name);
    case TpSplit::kRows: return rows(t.name, r.offset, r.count);
    case TpSplit::kCols: return cols(t.name, r.offset, r.count);
  }
  STRATA_THROW(ErrorKind::kInternal, "tensor ", t.name, " has no split kind");
}

LayerWeights ShardReader::layer(int64_t layer) const {
  LayerWeights w;
  w.expert_first = spec_.expert_begin;
  for (const TensorRef& t : layer_tensors(checkpoint_.config(), layer, &spec_)) slot_field(t, w) = slice(t);
  return w;
}

GlobalWeights ShardReader::globals() const {
  GlobalWeights g;
  for (const TensorRef& t : rank_tensors(checkpoint_.config(), spec_))
    if (t.layer < 0) slot_field(t, g) = slice(t);
  // A tied head is the embedding's rows (the last stage holds its own vocab-parallel copy).
  if (spec_.last_stage && checkpoint_.config().tied_embeddings) g.output = g.embed;
  return g;
}

namespace {
// Whether `parts` can share one stacked tensor: the same dtype and row length. GGUF mixes such as
// Q4_K_M give q, k and v (or gate and up) different block types; those stay separate matmuls.
bool stackable(const std::vector<const Tensor*>& parts) {
  for (const Tensor* t : parts)
    if (t->rank() != parts[0]->rank() || t->dtype() != parts[0]->dtype() || t->dim(-1) != parts[0]->dim(-1))
      return false;
  return true;
}

// Rows of `parts` (stackable) stacked into one host tensor.
Tensor stack_rows(const std::vector<const Tensor*>& parts) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, stackable(parts), "stack_rows: parts differ in dtype or row length");
  int64_t rows = 0;
  for (const Tensor* t : parts) rows += t->dim(0);
  Shape shape = parts[0]->shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, parts[0]->dtype());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (const Tensor* t : parts) {
    std::memcpy(dst, t->raw(), static_cast<size_t>(t->nbytes()));
    dst += t->nbytes();
  }
  return out;
}

class ResidentWeights final : public WeightSource {
 public:
  ResidentWeights(const Checkpoint& checkpoint, const ShardSpec& spec, Backend& backend) : spec_(spec) {
    const ShardReader reader(checkpoint, spec);
    auto up = [&](const Tensor& t) { return t.defined() ? backend.upload_weight(t) : Tensor(); };
    // Weights only matmul reads: the backend may keep just its own copy, so a transcoded layer's pages go back
    // once the host views below do (Checkpoint::materialize).
    auto up_mm = [&](const Tensor& t) { return t.defined() ? backend.upload_matmul_weight(t) : Tensor(); };
    // MoE routers keep the checkpoint's dtype (upload_weight may round f32 to bf16): routing is decided in f32.
    auto up_exact = [&](const Tensor& t) {
      if (!t.defined() || backend.device() == Device::kCpu) return up(t);
      Tensor dev = backend.alloc(t.shape(), t.dtype());
      backend.copy(t, dev);
      backend.synchronize();  // the host view may be released once this returns
      return dev;
    };
    const GlobalWeights g = reader.globals();
    globals_ = {up(g.embed), up(g.output_norm), up(g.output)};
    if (g.output.defined() && g.output.raw() == g.embed.raw()) globals_.output = globals_.embed;
    // The CPU reads weights straight from the memory map; stacking would copy them for no gain.
    const bool fuse = backend.device() != Device::kCpu;
    for (int64_t l = spec.layer_begin; l < spec.layer_end; ++l) {
      const LayerWeights h = reader.layer(l);
      LayerWeights d;
      d.attn_norm = up(h.attn_norm);
      d.q_norm = up(h.q_norm);
      d.k_norm = up(h.k_norm);
      d.router = up_exact(h.router);
      d.expert_first = h.expert_first;
      for (size_t e = 0; e < h.expert_gate.size(); ++e) {
        d.expert_gate.push_back(up_mm(h.expert_gate[e]));
        d.expert_up.push_back(up_mm(h.expert_up[e]));
        d.expert_down.push_back(up_mm(h.expert_down[e]));
      }
      d.shared_gate = up_mm(h.shared_gate), d.shared_up = up_mm(h.shared_up), d.shared_down = up_mm(h.shared_down);
      d.shared_router = up_exact(h.shared_router);
      d.ffn_norm = up(h.ffn_norm);
      d.wo = up_mm(h.wo);
      d.w_down = up_mm(h.w_down);
      const bool fuse_qkv = fuse && stackable({&h.wq, &h.wk, &h.wv}) &&
                            (!h.bq.defined() || stackable({&h.bq, &h.bk, &h.bv}));
      const bool fuse_gate_up = fuse && h.w_gate.defined() && stackable({&h.w_gate, &h.w_up});
      if (fuse_qkv) {
        d.wqkv = up(stack_rows({&h.wq, &h.wk, &h.wv}));
        d.wq = d.wqkv.rows(0, h.wq.dim(0));
        d.wk = d.wqkv.rows(h.wq.dim(0), h.wk.dim(0));
        d.wv = d.wqkv.rows(h.wq.dim(0) + h.wk.dim(0), h.wv.dim(0));
        if (h.bq.defined()) {
          d.bqkv = up(stack_rows({&h.bq, &h.bk, &h.bv}));
          d.bq = d.bqkv.rows(0, h.bq.dim(0));
          d.bk = d.bqkv.rows(h.bq.dim(0), h.bk.dim(0));
          d.bv = d.bqkv.rows(h.bq.dim(0) + h.bk.dim(0), h.bv.dim(0));
        }
      } else {
        d.wq = up_mm(h.wq), d.wk = up_mm(h.wk), d.wv = up_mm(h.wv);
        d.bq = up(h.bq), d.bk = up(h.bk), d.bv = up(h.bv);
      }
      if (fuse_gate_up) {
        d.w_gate_up = up(stack_rows({&h.w_gate, &h.w_up}));
        d.w_gate = d.w_gate_up.rows(0, h.w_gate.dim(0));
        d.w_up = d.w_gate_up.rows(h.w_gate.dim(0), h.w_up.dim(0));
      } else {
        d.w_gate = up_mm(h.w_gate), d.w_up = up_mm(h.w_up);
      }
      if (fuse) backend.synchronize();  // copies from h's views are done before they (and their pins) go
      layers_.push_back(std::move(d));
    }
  }
  const GlobalWeights& globals() override { return globals_; }
  const LayerWeights& acquire(int64_t layer) override {
    STRATA_CHECK_KIND(ErrorKind::kInternal, layer >= spec_.layer_begin && layer < spec_.layer_end, "layer ", layer,
                      " is not on this stage");
    return layers_[static_cast<size_t>(layer - spec_.layer_begin)];
  }
  void release(int64_t) override {}
  bool stays_resident() const override { return true; }

 private:
  ShardSpec spec_;
  GlobalWeights globals_;
  std::vector<LayerWeights> layers_;
};
}  // namespace

std::unique_ptr<WeightSource> make_resident_weights(const Checkpoint& checkpoint, const ShardSpec& spec,
                                                    Backend& backend) {
  return std::make_unique<ResidentWeights>(checkpoint, spec, backend);
}

}  // namespace strata
