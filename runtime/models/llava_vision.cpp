// runtime/models/llava_vision.cpp: CLIP vision tower and LLaVA projector forward.
#include "runtime/models/llava_vision.h"

#include <cmath>

#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/models/llava_next.h"

namespace strata {

namespace {
VisionShard shard_for(const LlavaConfig& config, const Collective* tp) {
  return tp != nullptr && tp->size() > 1 ? make_vision_shard(config, tp->rank(), tp->size()) : VisionShard{};
}
}  // namespace

LlavaVision::LlavaVision(const LlavaConfig& config, Backend& backend, const std::string& dir, Collective* tp)
    : LlavaVision(config, backend, load_llava_vision_weights(dir, config, backend, shard_for(config, tp)),
                  shard_for(config, tp), tp) {}

LlavaVision::LlavaVision(const LlavaConfig& config, Backend& backend, LlavaVisionWeights weights,
                         const VisionShard& shard, Collective* tp)
    : config_(config), backend_(backend), w_(std::move(weights)), shard_(shard), tp_(shard.split ? tp : nullptr) {
  STRATA_CHECK(!shard_.split || (tp_ != nullptr && tp_->size() == shard_.tp_size && tp_->rank() == shard_.tp_rank),
               "vision tower: a split shard (rank ", shard_.tp_rank, " of ", shard_.tp_size, ") needs its TP group");
  if (tp != nullptr && tp->size() > 1 && !shard_.split)
    LOG_INFO("vision tower: tensor parallelism ", tp->size(), " does not divide both its heads (",
             config_.vision.n_heads, ") and MLP columns (", config_.vision.ffn, "); each rank runs the whole tower");
  const int64_t d = config_.vision.hidden;
  // The embeddings are added to activations, so they take the activation dtype once here.
  class_embedding_ = scratch({1, d});
  backend_.copy(w_.class_embedding, class_embedding_);
  position_embedding_ = scratch({config_.vision.n_positions(), d});
  backend_.copy(w_.position_embedding, position_embedding_);
  if (config_.anyres()) {
    STRATA_CHECK(w_.image_newline.defined(), "vision tower: a LLaVA-NeXT config without image_newline weights");
    image_newline_ = scratch({1, config_.text_hidden});
    backend_.copy(w_.image_newline, image_newline_);
  }
}

Tensor LlavaVision::patch_rows(const std::vector<Tensor>& pixel_values) const {
  const ClipVisionConfig& v = config_.vision;
  const int64_t side = v.image_size, p = v.patch_size, grid = v.patches_per_side(), c = v.channels;
  Tensor rows = Tensor::empty({static_cast<int64_t>(pixel_values.size()) * v.n_patches(), c * p * p}, DType::kF32);
  float* out = rows.data<float>();
  for (const Tensor& px : pixel_values) {
    STRATA_CHECK(px.device() == Device::kCpu && px.dtype() == DType::kF32 && px.shape() == Shape({c, side, side}),
                 "vision tower: pixel_values must be a host f32 [", c, ", ", side, ", ", side, "] tensor (the tower's ",
                 "image_size), got ", shape_str(px.shape()), " ", dtype_name(px.dtype()));
    const float* src = px.data<float>();
    for (int64_t gy = 0; gy < grid; ++gy)
      for (int64_t gx = 0; gx < grid; ++gx)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t y = 0; y < p; ++y) {
            const float* line = src + (ch * side + gy * p + y) * side + gx * p;
            std::copy(line, line + p, out);
            out += p;
          }
  }
  return rows;
}

Tensor LlavaVision::tower_hidden(const std::vector<Tensor>& pixel_values) {
  STRATA_CHECK(!pixel_values.empty(), "vision tower: no images");
  const ClipVisionConfig& v = config_.vision;
  const int64_t images = static_cast<int64_t>(pixel_values.size());
  const int64_t n_patches = v.n_patches(), seq = v.n_positions(), d = v.hidden;

  // Patch embedding: a convolution with stride = kernel is one GEMM over the patches' pixels.
  const Tensor host_rows = patch_rows(pixel_values);
  Tensor rows = backend_.alloc(host_rows.shape(), backend_.activation_dtype());
  backend_.copy(host_rows, rows);
  const Tensor& conv = w_.patch_embedding;
  Tensor patches = scratch({images * n_patches, d});
  backend_.matmul(rows, conv.reshape({d, conv.numel() / d}), nullptr, patches);

  // [class token, patches...] + positions, then the pre-LayerNorm.
  Tensor embedded = scratch({images * seq, d});
  for (int64_t i = 0; i < images; ++i) {
    Tensor cls = embedded.rows(i * seq, 1);
    backend_.copy(class_embedding_, cls);
    Tensor body = embedded.rows(i * seq + 1, n_patches);
    backend_.copy(patches.rows(i * n_patches, n_patches), body);
    Tensor image = embedded.rows(i * seq, seq);
    backend_.add(image, position_embedding_);
  }
  Tensor hidden = scratch({images * seq, d});
  backend_.layernorm(embedded, w_.pre_norm_w, &w_.pre_norm_b, v.layer_norm_eps, hidden);

  // Hidden state k is the output of layer k: only the layers up to the selected one run.
  for (int64_t l = 0; l < config_.feature_layer; ++l) encoder_layer(l, hidden, images);
  return hidden;
}

void LlavaVision::encoder_layer(int64_t layer, Tensor& hidden, int64_t images) {
  const ClipVisionConfig& v = config_.vision;
  const int64_t tokens = hidden.dim(0), d = v.hidden, hd = v.head_dim();
  // This rank's heads and MLP columns; a split layer's row-parallel outputs are partial sums whose biases
  // only the group's first rank adds, once, before the all-reduce.
  const int64_t heads = shard_.split ? shard_.heads : v.n_heads, ffn = shard_.split ? shard_.ffn_count : v.ffn;
  const bool adds_bias = !shard_.split || shard_.tp_rank == 0;
  const ClipLayerWeights& w = w_.layers[static_cast<size_t>(layer)];

  Tensor normed = scratch({tokens, d});
  backend_.layernorm(hidden, w.norm1_w, &w.norm1_b, v.layer_norm_eps, normed);
  Tensor q = scratch({tokens, heads, hd}), k = scratch({tokens, heads, hd}), val = scratch({tokens, heads, hd});
  backend_.matmul(normed, w.wq, &w.bq, q);
  backend_.matmul(normed, w.wk, &w.bk, k);
  backend_.matmul(normed, w.wv, &w.bv, val);
  Tensor att = scratch({tokens, heads, hd});
  backend_.attention_bidirectional(q, k, val, tokens / images, 1.f / std::sqrt(static_cast<float>(hd)), att);
  Tensor projected = scratch({tokens, d});
  backend_.matmul(att.reshape({tokens, heads * hd}), w.wo, adds_bias ? &w.bo : nullptr, projected);
  if (tp_ != nullptr) tp_->all_reduce_sum(projected);
  backend_.add(hidden, projected);

  backend_.layernorm(hidden, w.norm2_w, &w.norm2_b, v.layer_norm_eps, normed);
  Tensor inner = scratch({tokens, ffn});
  backend_.matmul(normed, w.fc1_w, &w.fc1_b, inner);
  backend_.activation(inner, v.act, inner);
  backend_.matmul(inner, w.fc2_w, adds_bias ? &w.fc2_b : nullptr, projected);
  if (tp_ != nullptr) tp_->all_reduce_sum(projected);
  backend_.add(hidden, projected);
}

Tensor LlavaVision::encode(const std::vector<Tensor>& pixel_values) {
  const Tensor hidden = tower_hidden(pixel_values);
  const int64_t images = static_cast<int64_t>(pixel_values.size());
  const int64_t seq = config_.vision.n_positions(), d = config_.vision.hidden;
  const int64_t per_image = config_.features_per_image();

  // "default" drops each image's class token; "full" keeps it.
  Tensor selected = hidden;
  if (config_.select == FeatureSelect::kDefault) {
    selected = scratch({images * per_image, d});
    for (int64_t i = 0; i < images; ++i) {
      Tensor dst = selected.rows(i * per_image, per_image);
      backend_.copy(hidden.rows(i * seq + 1, per_image), dst);
    }
  }
  const Tensor* b1 = w_.proj1_b.defined() ? &w_.proj1_b : nullptr;
  const Tensor* b2 = w_.proj2_b.defined() ? &w_.proj2_b : nullptr;
  Tensor inner = scratch({images * per_image, config_.text_hidden});
  backend_.matmul(selected, w_.proj1_w, b1, inner);
  backend_.activation(inner, config_.projector_act, inner);
  Tensor features = scratch({images * per_image, config_.text_hidden});
  backend_.matmul(inner, w_.proj2_w, b2, features);
  return features;
}

Tensor LlavaVision::encode_images(const std::vector<Tensor>& pixel_values,
                                  const std::vector<vision::Resolution>& sizes) {
  if (!config_.anyres()) return encode(pixel_values);
  STRATA_CHECK(pixel_values.size() == sizes.size(), "vision tower: ", pixel_values.size(), " images but ",
               sizes.size(), " image sizes");
  const ClipVisionConfig& v = config_.vision;
  std::vector<Tensor> tiles;
  int64_t total = 0;
  for (size_t i = 0; i < pixel_values.size(); ++i) {
    const Tensor& px = pixel_values[i];
    const vision::Resolution size = sizes[i];
    STRATA_CHECK(size.height > 0 && size.width > 0, "vision tower: image ", i, " has no size (", size.width, "x",
                 size.height, "); LLaVA-NeXT tiles and unpads by the image's size in pixels");
    const int64_t n = config_.tiles_for(size.height, size.width);
    STRATA_CHECK(px.rank() == 4 && px.dim(0) == n, "vision tower: image ", i, " (", size.width, "x", size.height,
                 ") has pixel_values ", shape_str(px.shape()), "; LLaVA-NeXT wants its ", n, " tiles [", n, ", ",
                 v.channels, ", ", v.image_size, ", ", v.image_size, "] (the checkpoint's anyres image processor)");
    for (int64_t t = 0; t < n; ++t) tiles.push_back(px.rows(t, 1).reshape({px.dim(1), px.dim(2), px.dim(3)}));
    total += config_.features_for(size.height, size.width);
  }
  const Tensor projected = encode(tiles);  // every tile of every image in one batch
  Tensor packed = scratch({total, config_.text_hidden});
  int64_t tile = 0, row = 0;
  for (size_t i = 0; i < pixel_values.size(); ++i) {
    const int64_t n = pixel_values[i].dim(0), features = config_.features_for(sizes[i].height, sizes[i].width);
    Tensor out = packed.rows(row, features);
    pack_anyres_features(backend_, config_, projected.rows(tile * v.n_patches(), n * v.n_patches()), image_newline_,
                         sizes[i], out);
    tile += n;
    row += features;
  }
  return packed;
}

}  // namespace strata
