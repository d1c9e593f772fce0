// runtime/formats/llama2c.cpp: the llama2.c .bin layout (karpathy/llama2.c run.c, legacy export).
#include "runtime/formats/llama2c.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/log.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {
namespace fs = std::filesystem;

std::vector<TensorEntry> parse_llama2c_layout(const uint8_t* data, size_t size, const std::string& source,
                                              ModelConfig* config) {
  // What --model takes, for a file that is none of them (a tokenizer, a text file, a PyTorch .pt, ...).
  const char* formats = "strata reads a Hugging Face model directory (config.json + *.safetensors), a GGUF file "
                        "(F32/F16/BF16/Q8_0/Q4_0 tensors) or a llama2.c .bin (legacy fp32 export)";
  STRATA_CHECK_KIND(ErrorKind::kFormat, size >= 28, source, ": ", size,
                    " bytes is too short for a llama2.c checkpoint header (28 bytes) and it is not GGUF; ", formats);
  uint32_t magic = 0;
  std::memcpy(&magic, data, 4);
  if (magic == 0x616b3432u) {  // "ak42": export.py --version 1 (fp32) or 2 (int8)
    int32_t version = 0;
    std::memcpy(&version, data + 4, 4);
    STRATA_THROW(ErrorKind::kFormat, source, ": llama2.c version-", version, " export (magic 'ak42'",
                 version == 2 ? ", int8 Q8_0 groups" : "",
                 ") is not supported; export with llama2.c export.py --version 0 (legacy fp32) or convert to GGUF");
  }
  Llama2cHeader h;
  std::memcpy(&h, data, sizeof(h));
  const bool shared_classifier = h.vocab_size > 0;
  const int64_t vocab = h.vocab_size < 0 ? -static_cast<int64_t>(h.vocab_size) : h.vocab_size;
  auto plausible = [](int64_t v, int64_t max) { return v > 0 && v <= max; };
  // Numbers out of any model's range: the file is not llama2.c at all, so its "header" is noise
  // not worth printing (the debug log keeps it).
  if (!(plausible(h.dim, 1 << 16) && plausible(h.hidden_dim, 1 << 18) && plausible(h.n_layers, 1024) &&
        plausible(h.n_heads, 1024) && plausible(h.n_kv_heads, h.n_heads) && plausible(vocab, 1 << 22) &&
        plausible(h.seq_len, 1 << 22))) {
    LOG_DEBUG(source, ": first 28 bytes as a llama2.c header: dim ", h.dim, ", hidden_dim ", h.hidden_dim, ", n_layers ",
              h.n_layers, ", n_heads ", h.n_heads, ", n_kv_heads ", h.n_kv_heads, ", vocab ", h.vocab_size,
              ", seq_len ", h.seq_len);
    STRATA_THROW(ErrorKind::kFormat, source, ": not a model checkpoint (no GGUF magic, and its first bytes are no "
                 "llama2.c header); ", formats);
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat,
                    h.dim % h.n_heads == 0 && h.n_heads % h.n_kv_heads == 0 && (h.dim / h.n_heads) % 2 == 0,
                    source, ": header (dim ", h.dim, ", hidden_dim ", h.hidden_dim, ", n_layers ", h.n_layers,
                    ", n_heads ", h.n_heads, ", n_kv_heads ", h.n_kv_heads, ", vocab ", h.vocab_size, ", seq_len ",
                    h.seq_len, ") is not a llama2.c model; is this a llama2.c .bin checkpoint?");
  const int64_t dim = h.dim, hidden = h.hidden_dim, L = h.n_layers, head = dim / h.n_heads;
  const int64_t kv_dim = head * h.n_kv_heads;

  std::vector<TensorEntry> entries;
  uint64_t offset = 28;
  // One stacked array of `L` (or one) tensors of `shape`; per-layer entries are views into it.
  auto stacked = [&](const char* name, Shape shape, bool per_layer, const char* file_name) {
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(shape)) * 4;
    const int64_t count = per_layer ? L : 1;
    for (int64_t l = 0; l < count; ++l) {
      TensorEntry e;
      e.name = per_layer ? cat("blk.", l, ".", name) : std::string(name);
      e.file = source;
      e.file_name = per_layer ? cat(file_name, "[", l, "]") : std::string(file_name);
      e.dtype = DType::kF32;
      e.shape = shape;
      e.offset = offset + static_cast<uint64_t>(l) * bytes;
      e.nbytes = bytes;
      entries.push_back(std::move(e));
    }
    offset += static_cast<uint64_t>(count) * bytes;
  };
  stacked("token_embd.weight", {vocab, dim}, false, "token_embedding_table");
  stacked("attn_norm.weight", {dim}, true, "rms_att_weight");
  stacked("attn_q.weight", {dim, dim}, true, "wq");
  stacked("attn_k.weight", {kv_dim, dim}, true, "wk");
  stacked("attn_v.weight", {kv_dim, dim}, true, "wv");
  stacked("attn_output.weight", {dim, dim}, true, "wo");
  stacked("ffn_norm.weight", {dim}, true, "rms_ffn_weight");
  stacked("ffn_gate.weight", {hidden, dim}, true, "w1");
  stacked("ffn_down.weight", {dim, hidden}, true, "w2");
  stacked("ffn_up.weight", {hidden, dim}, true, "w3");
  stacked("output_norm.weight", {dim}, false, "rms_final_weight");
  offset += static_cast<uint64_t>(h.seq_len) * static_cast<uint64_t>(head / 2) * 4 * 2;  // freq_cis_real/imag
  if (!shared_classifier) stacked("output.weight", {vocab, dim}, false, "wcls");
  // Sizes are bounded by the plausibility limits above (< 2^62), so no overflow in `offset`.
  for (const auto& e : entries)
    STRATA_CHECK_KIND(ErrorKind::kFormat, e.offset + e.nbytes <= size, source, ": tensor '", e.file_name, "' (",
                      e.name, ") spans bytes [", e.offset, ", ", e.offset + e.nbytes, ") but the file has only ", size,
                      " bytes; the file is truncated (re-download or re-export it)");
  STRATA_CHECK_KIND(ErrorKind::kFormat, offset == size, source, ": the header describes a ", offset,
                    "-byte checkpoint but the file has ", size, " bytes; ",
                    offset > size ? "the file is truncated" : "it is not a legacy llama2.c fp32 export",
                    offset > size ? " (re-download or re-export it)" : "");

  if (config != nullptr) {
    ModelConfig& c = *config;
    c.arch = "llama";
    c.vocab_size = vocab;
    c.hidden = dim;
    c.n_layers = L;
    c.n_heads = h.n_heads;
    c.n_kv_heads = h.n_kv_heads;
    c.head_dim = head;
    c.ffn = hidden;
    c.max_seq = h.seq_len;
    c.rms_eps = 1e-5f;  // run.c hard-codes these
    c.rope_theta = 10000.f;
    c.rope_style = RopeStyle::kAdjacent;
    c.tied_embeddings = shared_classifier;
    c.bos_id = 1;
    c.eos_ids = {2};
  }
  return entries;
}

namespace {

std::string find_tokenizer(const fs::path& dir, int64_t vocab) {
  for (const std::string& name : {std::string("tokenizer.bin"), cat("tok", vocab, ".bin")})
    if (fs::exists(dir / name)) return (dir / name).string();
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("tok", 0) == 0 && e.path().extension() == ".bin") found.push_back(e.path().string());
  }
  std::sort(found.begin(), found.end());
  if (found.size() > 1) LOG_WARN(dir.string(), ": several tok*.bin files; using ", found[0]);
  return found.empty() ? "" : found[0];
}

}  // namespace

std::unique_ptr<Checkpoint> open_llama2c_checkpoint(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  auto ckpt = std::make_unique<CheckpointBuilder>(path, "llama2c");
  ckpt->add_file(file);
  ckpt->set_config_source(path + " (llama2.c header)");
  for (auto& e : parse_llama2c_layout(file->data(), file->size(), path, &ckpt->mutable_config()))
    ckpt->add_entry(std::move(e));
  ckpt->finish();
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  const std::string tok = find_tokenizer(dir, ckpt->config().vocab_size);
  if (tok.empty()) {
    LOG_WARN(path, ": no tokenizer.bin or tok*.bin beside the checkpoint; the model can only take token ids");
  } else {
    ckpt->set_tokenizer(load_llama2c_tokenizer(tok, ckpt->config().vocab_size));
  }
  return ckpt;
}

}  // namespace strata
