// runtime/formats/hf_checkpoint.cpp: reading Hugging Face Llama/Mistral/Qwen2 directories.
#include "runtime/formats/hf_checkpoint.h"

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <charconv>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "runtime/error.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/formats/hf_quant.h"
#include "runtime/formats/safetensors.h"
#include "runtime/log.h"
#include "runtime/models/model_description.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::string read_text(const std::string& path) { return read_file_bytes(path, "model file"); }

json::value parse_json(const std::string& text, const std::string& source) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  STRATA_CHECK_KIND(ErrorKind::kFormat, !ec, source, ": not valid JSON (", ec.message(), ")");
  STRATA_CHECK_KIND(ErrorKind::kFormat, v.is_object(), source, ": expected a JSON object");
  return v;
}

// Typed field access with messages naming the file and the key.
struct JsonFields {
  const json::object& obj;
  const std::string& source;

  const json::value* find(const char* key) const {
    const json::value* v = obj.if_contains(key);
    return (v == nullptr || v->is_null()) ? nullptr : v;
  }
  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    const json::value* v = find(key);
    if (v == nullptr) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, fallback.has_value(), source, ": required field '", key, "' is missing");
      return *fallback;
    }
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v->get_uint64());
    STRATA_THROW(ErrorKind::kFormat, source, ": field '", key, "' must be an integer, got ", json::serialize(*v));
  }
  double number(const char* key, double fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    if (v->is_double()) return v->get_double();
    if (v->is_int64()) return static_cast<double>(v->get_int64());
    if (v->is_uint64()) return static_cast<double>(v->get_uint64());
    STRATA_THROW(ErrorKind::kFormat, source, ": field '", key, "' must be a number, got ", json::serialize(*v));
  }
  bool boolean(const char* key, bool fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_bool(), source, ": field '", key, "' must be true or false");
    return v->get_bool();
  }
  std::string string(const char* key, const char* fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_string(), source, ": field '", key, "' must be a string");
    return std::string(v->as_string());
  }
};

// Shortest decimal that reads back as the same float, so 1e-5f is written "1e-05", not 9.99999974e-06.
double float_for_json(float f) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), f);
  return std::stod(std::string(buf, res.ptr));
}

// The expert fields of a mixtral / qwen2_moe / qwen3_moe config.json (transformers' names; Mixtral's
// expert width is its intermediate_size, and transformers 5 writes Qwen3-MoE's expert count as
// num_local_experts).
void parse_moe_config(const JsonFields& f, ModelConfig& c) {
  MoeConfig& m = c.moe;
  const bool mixtral = c.arch == "mixtral";
  m.n_experts = f.find("num_local_experts") != nullptr ? f.integer("num_local_experts") : f.integer("num_experts");
  m.n_used = f.integer("num_experts_per_tok");
  m.expert_ffn = mixtral ? c.ffn : f.integer("moe_intermediate_size");
  m.shared_ffn = c.arch == "qwen2_moe" ? f.integer("shared_expert_intermediate_size") : 0;
  m.norm_topk = mixtral || f.boolean("norm_topk_prob", false);
  m.sparse_step = mixtral ? 1 : f.integer("decoder_sparse_step", 1);
  if (const json::value* dense = f.find("mlp_only_layers"); dense != nullptr && !mixtral) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, dense->is_array(), f.source, ": mlp_only_layers must be a list of layers");
    for (const auto& v : dense->as_array()) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, v.is_int64() && v.get_int64() >= 0 && v.get_int64() < c.n_layers, f.source,
                        ": mlp_only_layers entry ", json::serialize(v), " is not a layer of the ", c.n_layers,
                        "-layer model");
      m.dense_layers.push_back(v.get_int64());
    }
  }
  c.qk_norm = c.arch == "qwen3_moe";
  STRATA_CHECK_KIND(ErrorKind::kFormat, !f.boolean("use_sliding_window", false), f.source,
                    ": use_sliding_window = true is not supported (strata attends over the whole context)");
  STRATA_CHECK_KIND(ErrorKind::kFormat, f.string("hidden_act", "silu") == "silu", f.source, ": hidden_act '",
                    f.string("hidden_act", "silu"), "' is not supported; the experts are SwiGLU (silu)");
}

// The quantized layers of a checkpoint, each transcoded (hf_quant.h) when first read into its place in one
// sparse in-memory file: a rank pays for the layers it reads, and opening for the config pays nothing. A layer's
// pages go back to the system when its last pin does (checkpoint.h), so they are not held beside a backend's
// own copy; each layer starts on a page boundary so that handing one back never touches a neighbour.
class TranscodedLayers final : public LazyTensors, public std::enable_shared_from_this<TranscodedLayers> {
 public:
  // `sources`: the shards the layers' parts point into. `threads`: how many transcode one layer.
  TranscodedLayers(HfQuantization quant, std::vector<HfQuantLayer> layers,
                   std::vector<std::shared_ptr<MappedFile>> sources, int threads)
      : quant_(std::move(quant)), layers_(std::move(layers)), sources_(std::move(sources)), threads_(threads),
        state_(layers_.size()) {
    uint64_t size = 0;
    for (size_t i = 0; i < layers_.size(); ++i) {
      offsets_.push_back(size);
      size += span(i);
    }
    file_ = std::make_shared<MappedFile>(MappedFile::in_memory("strata-transcoded-weights", size));
  }
  size_t size() const { return layers_.size(); }
  // A layer's bytes rounded up to whole pages: its own, written and handed back together.
  uint64_t span(size_t i) const { return (layers_[i].nbytes() + page_ - 1) / page_ * page_; }
  const HfQuantLayer& layer(size_t i) const { return layers_[i]; }
  uint64_t offset(size_t i) const { return offsets_[i]; }
  const std::shared_ptr<MappedFile>& file() const { return file_; }
  void bind(const std::string& canonical, size_t i) { index_[canonical] = i; }

  std::shared_ptr<void> pin(const TensorEntry& entry) override {
    const auto it = index_.find(entry.name);
    STRATA_CHECK_KIND(ErrorKind::kInternal, it != index_.end(), "tensor '", entry.name, "' is not a transcoded layer");
    const size_t i = it->second;
    State& st = state_[i];
    {
      const std::lock_guard<std::mutex> lock(st.mutex);  // one layer builds at a time; others go on in parallel
      if (!st.built) build(i);  // a throw leaves it unbuilt: the next read retries and fails the same way
      st.pins += 1;
    }
    // The pin owns the file (views outlive the checkpoint) and this object; its deleter may release the bytes.
    auto self = shared_from_this();
    return std::shared_ptr<void>(file_.get(), [self, i](void*) { self->unpin(i); });
  }
  uint64_t tensors_built() const override { return tensors_; }
  uint64_t bytes_built() const override { return bytes_; }
  uint64_t bytes_held() const override { return held_; }

 private:
  struct State {
    std::mutex mutex;
    bool built = false;
    int64_t pins = 0;
  };

  void build(size_t i) {
    const HfQuantLayer& l = layers_[i];
    for (const auto& source : sources_)  // a shard truncated since open would SIGBUS on the read below
      for (const auto& part : l.parts)
        if (part.second.file == source->path()) source->check_intact();
    // Straight into the layer's pages: no buffer the size of the layer, no copy.
    file_->fill(offsets_[i], l.nbytes(), [&](uint8_t* out) { transcode_hf_layer(quant_, l, out, threads_); });
    // The codes are read once per build: out of this process's resident set (a rebuild faults them back in).
    for (const auto& source : sources_)
      for (const auto& part : l.parts)
        if (part.second.file == source->path())
          source->drop_pages(static_cast<uint64_t>(part.second.data - source->data()), part.second.nbytes);
    state_[i].built = true;
    tensors_ += 1;
    bytes_ += l.nbytes();
    held_ += l.nbytes();
    LOG_DEBUG("transcoded ", l.described);
  }

  // Destructors never throw: a failed release logs and keeps the bytes (still correct, only held).
  void unpin(size_t i) noexcept {
    State& st = state_[i];
    const std::lock_guard<std::mutex> lock(st.mutex);
    if (--st.pins > 0 || !st.built) return;
    try {
      file_->discard(offsets_[i], span(i));
      st.built = false;
      held_ -= layers_[i].nbytes();
    } catch (const std::exception& e) {
      LOG_WARN("keeping the transcoded bytes of ", layers_[i].described, ": ", e.what());
    }
  }

  const HfQuantization quant_;
  const std::vector<HfQuantLayer> layers_;
  const std::vector<std::shared_ptr<MappedFile>> sources_;
  const int threads_;
  const uint64_t page_ = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<uint64_t> offsets_;
  std::vector<State> state_;
  std::map<std::string, size_t> index_;  // canonical name -> layer
  std::shared_ptr<MappedFile> file_;
  std::atomic<uint64_t> tensors_{0}, bytes_{0}, held_{0};
};

}  // namespace

std::optional<std::string> hf_to_canonical_name(const std::string& hf, std::string_view arch) {
  const ModelDescription& d = model_description(arch);
  for (const TensorSlot& s : d.slots)
    if (!s.per_layer && hf == s.hf_name) return std::string(s.name);
  const std::string_view prefix = d.hf_layer_prefix;
  if (hf.rfind(prefix, 0) != 0) return std::nullopt;
  size_t i = prefix.size();
  size_t digits = 0;
  while (i + digits < hf.size() && hf[i + digits] >= '0' && hf[i + digits] <= '9') ++digits;
  if (digits == 0 || digits > 9 || i + digits >= hf.size() || hf[i + digits] != '.') return std::nullopt;
  const std::string layer = hf.substr(i, digits);
  if (layer.size() > 1 && layer[0] == '0') return std::nullopt;
  const std::string rest = hf.substr(i + digits + 1);
  for (const TensorSlot& s : d.slots)
    if (s.per_layer && rest == s.hf_name) return cat("blk.", layer, ".", s.name);
  for (const TensorSlot& s : d.slots)  // routed experts: "...experts.<e>...", the index in both names
    if (const int64_t e = s.per_expert ? match_expert_pattern(s.hf_name, rest) : -1; e >= 0)
      return cat("blk.", layer, ".", expert_instance(s.name, e));
  return std::nullopt;
}

std::string canonical_to_hf_name(const std::string& canonical, std::string_view arch) {
  const ModelDescription& d = model_description(arch);
  for (const TensorSlot& s : d.slots)
    if (!s.per_layer && canonical == s.name) return std::string(s.hf_name);
  if (const int64_t layer = tensor_layer_index(canonical); layer >= 0) {
    const std::string rest = canonical.substr(canonical.find('.', 4) + 1);
    for (const TensorSlot& s : d.slots)
      if (s.per_layer && rest == s.name) return cat(d.hf_layer_prefix, layer, ".", s.hf_name);
    for (const TensorSlot& s : d.slots)
      if (const int64_t e = s.per_expert ? match_expert_pattern(s.name, rest) : -1; e >= 0)
        return cat(d.hf_layer_prefix, layer, ".", expert_instance(s.hf_name, e));
  }
  return canonical;
}

std::string llava_language_model_name(const std::string& name) {
  // transformers 4 wrote "language_model.model.*" and "language_model.lm_head.*"; its later releases
  // "model.language_model.*" and "lm_head.*".
  for (const auto& [prefix, replacement] : {std::pair<const char*, const char*>{"language_model.model.", "model."},
                                            {"language_model.lm_head.", "lm_head."},
                                            {"model.language_model.", "model."}})
    if (name.rfind(prefix, 0) == 0) return replacement + name.substr(std::strlen(prefix));
  if (name.rfind("lm_head.", 0) == 0) return name;
  return "";  // the vision side and anything else: not the language model's
}

ModelConfig parse_hf_config(const std::string& text, const std::string& source) {
  const json::value root = parse_json(text, source);
  const JsonFields f{root.as_object(), source};
  ModelConfig c;
  c.arch = f.string("model_type", "");
  const bool moe = c.arch == "mixtral" || c.arch == "qwen2_moe" || c.arch == "qwen3_moe";
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.arch == "llama" || c.arch == "mistral" || c.arch == "qwen2" || moe, source,
                    ": model_type '", c.arch,
                    "' is not supported; strata reads llama, mistral, qwen2, mixtral, qwen2_moe and qwen3_moe");
  c.hidden = f.integer("hidden_size");
  c.ffn = f.integer("intermediate_size");
  c.n_layers = f.integer("num_hidden_layers");
  c.n_heads = f.integer("num_attention_heads");
  c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.n_heads > 0, source, ": num_attention_heads must be positive");
  c.head_dim = f.integer("head_dim", c.hidden / c.n_heads);
  c.vocab_size = f.integer("vocab_size");
  c.max_seq = f.integer("max_position_embeddings", 2048);
  c.rms_eps = static_cast<float>(f.number("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(f.number("rope_theta", 10000.0));
  c.rope_style = RopeStyle::kHalf;
  c.tied_embeddings = f.boolean("tie_word_embeddings", false);  // transformers' default
  c.qkv_bias = c.arch == "qwen2" || (c.arch == "qwen2_moe" && f.boolean("qkv_bias", true));
  if (moe) parse_moe_config(f, c);
  // Llama's attention_bias also puts a bias on o_proj, which the model does not have.
  STRATA_CHECK_KIND(ErrorKind::kFormat, !f.boolean("attention_bias", false) && !f.boolean("mlp_bias", false), source,
                    ": attention_bias / mlp_bias = true is not supported for ", c.arch,
                    " (strata's Llama has biases only on q/k/v, as Qwen2 does)");
  c.bos_id = static_cast<int32_t>(f.integer("bos_token_id", 1));
  if (const json::value* eos = f.find("eos_token_id")) {
    c.eos_ids.clear();
    if (eos->is_array()) {
      for (const auto& v : eos->as_array()) {
        STRATA_CHECK_KIND(ErrorKind::kFormat, v.is_int64(), source, ": eos_token_id entries must be integers");
        c.eos_ids.push_back(static_cast<int32_t>(v.get_int64()));
      }
    } else {
      c.eos_ids.push_back(static_cast<int32_t>(f.integer("eos_token_id")));
    }
  }
  // transformers >= 5 writes rope_theta and the scaling together as "rope_parameters"; older
  // versions write "rope_theta" and "rope_scaling". Both are read.
  const json::value* rs = f.find("rope_scaling");
  if (const json::value* rp = f.find("rope_parameters"); rp != nullptr && !rp->is_null()) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, rp->is_object(), source, ": rope_parameters must be an object");
    const JsonFields p{rp->as_object(), source};
    c.rope_theta = static_cast<float>(p.number("rope_theta", c.rope_theta));
    if (rs == nullptr || rs->is_null()) rs = rp;
  }
  if (rs != nullptr && !rs->is_null()) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, rs->is_object(), source, ": rope_scaling must be an object or null");
    const JsonFields r{rs->as_object(), source};
    const std::string type = r.string("rope_type", r.string("type", "default").c_str());
    if (type == "llama3") {
      c.rope_scaling.factor = static_cast<float>(r.number("factor", 0.0));
      c.rope_scaling.low_freq_factor = static_cast<float>(r.number("low_freq_factor", 1.0));
      c.rope_scaling.high_freq_factor = static_cast<float>(r.number("high_freq_factor", 4.0));
      c.rope_scaling.original_max_position = r.integer("original_max_position_embeddings", 8192);
      STRATA_CHECK_KIND(ErrorKind::kFormat, c.rope_scaling.factor > 0, source, ": rope_scaling.factor must be > 0");
    } else {
      STRATA_CHECK_KIND(ErrorKind::kFormat, type == "default", source, ": rope_scaling type '", type,
                        "' is not supported (strata implements llama3 scaling only)");
    }
  }
  c.validate(source);
  return c;
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  const char* cls = c.arch == "qwen2"       ? "Qwen2ForCausalLM"
                    : c.arch == "mistral"   ? "MistralForCausalLM"
                    : c.arch == "mixtral"   ? "MixtralForCausalLM"
                    : c.arch == "qwen2_moe" ? "Qwen2MoeForCausalLM"
                    : c.arch == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                                            : "LlamaForCausalLM";
  json::object o;
  o["architectures"] = json::array{cls};
  o["model_type"] = c.arch;
  o["hidden_size"] = c.hidden;
  o["intermediate_size"] = c.ffn;
  o["num_hidden_layers"] = c.n_layers;
  o["num_attention_heads"] = c.n_heads;
  o["num_key_value_heads"] = c.n_kv_heads;
  o["head_dim"] = c.head_dim;
  o["hidden_act"] = "silu";
  o["max_position_embeddings"] = c.max_seq;
  o["rms_norm_eps"] = float_for_json(c.rms_eps);
  o["rope_theta"] = float_for_json(c.rope_theta);
  if (c.rope_scaling.factor > 0) {
    o["rope_scaling"] = json::object{{"rope_type", "llama3"},
                                     {"factor", float_for_json(c.rope_scaling.factor)},
                                     {"low_freq_factor", float_for_json(c.rope_scaling.low_freq_factor)},
                                     {"high_freq_factor", float_for_json(c.rope_scaling.high_freq_factor)},
                                     {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else {
    o["rope_scaling"] = nullptr;
  }
  if (c.moe.enabled()) {  // transformers' names (parse_moe_config reads them back)
    const MoeConfig& m = c.moe;
    if (c.arch == "mixtral") {
      o["num_local_experts"] = m.n_experts;
      o["intermediate_size"] = m.expert_ffn;
    } else {
      o["num_experts"] = m.n_experts;
      o["moe_intermediate_size"] = m.expert_ffn;
      o["norm_topk_prob"] = m.norm_topk;
      o["decoder_sparse_step"] = m.sparse_step;
      json::array dense;
      for (int64_t l : m.dense_layers) dense.push_back(l);
      o["mlp_only_layers"] = std::move(dense);
    }
    o["num_experts_per_tok"] = m.n_used;
    if (c.arch == "qwen2_moe") {
      o["shared_expert_intermediate_size"] = m.shared_ffn;
      o["qkv_bias"] = c.qkv_bias;
    }
  }
  if (c.arch != "qwen2" && c.arch != "qwen2_moe") o["attention_bias"] = false;
  o["tie_word_embeddings"] = c.tied_embeddings;
  o["vocab_size"] = c.vocab_size;
  o["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() == 1) {
    o["eos_token_id"] = c.eos_ids[0];
  } else {
    json::array eos;
    for (int32_t id : c.eos_ids) eos.push_back(id);
    o["eos_token_id"] = std::move(eos);
  }
  o["torch_dtype"] = torch_dtype;
  o["use_cache"] = true;
  return json::serialize(o) + "\n";
}

std::unique_ptr<Checkpoint> open_hf_checkpoint(const std::string& dir, const CheckpointOptions& options) {
  const fs::path root(dir);
  const std::string config_path = (root / "config.json").string();
  if (!fs::exists(config_path)) {
    for (const auto& e : fs::directory_iterator(root))
      if (e.path().extension() == ".gguf")
        STRATA_THROW(ErrorKind::kFormat, dir, ": no config.json here, but ", e.path().string(),
                     " is; pass the .gguf file itself");
    STRATA_THROW(ErrorKind::kFormat, dir, ": not a Hugging Face model directory (config.json is missing)");
  }
  auto ckpt = std::make_unique<CheckpointBuilder>(dir, "safetensors");
  ckpt->set_config_source(config_path);
  ModelConfig& config = ckpt->mutable_config();
  const json::value raw_config = parse_json(read_text(config_path), config_path);
  // A LLaVA checkpoint (LlavaForConditionalGeneration, or LLaVA-NeXT's) holds its language model under text_config and
  // its weights under a prefix; the vision side is read by runtime/models/llava_vision_weights.h.
  const json::value* model_type = raw_config.as_object().if_contains("model_type");
  const bool llava = model_type != nullptr && model_type->is_string() &&
                     (model_type->as_string() == "llava" || model_type->as_string() == "llava_next");
  if (llava) {
    const json::value* text = raw_config.as_object().if_contains("text_config");
    STRATA_CHECK_KIND(ErrorKind::kFormat, text != nullptr && text->is_object(), config_path,
                      ": a llava config needs a 'text_config' object");
    config = parse_hf_config(json::serialize(*text), config_path + " (text_config)");
  } else {
    config = parse_hf_config(read_text(config_path), config_path);
  }
  ckpt->set_native_name([arch = config.arch](const std::string& name) { return canonical_to_hf_name(name, arch); });
  const bool tie_explicit = raw_config.as_object().if_contains("tie_word_embeddings") != nullptr;

  // Shards: the index names a file per tensor; a single model.safetensors has everything.
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  const fs::path index_path = root / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const json::value index = parse_json(read_text(index_path.string()), index_path.string());
    const json::value* wm = index.as_object().if_contains("weight_map");
    STRATA_CHECK_KIND(ErrorKind::kFormat, wm != nullptr && wm->is_object(), index_path.string(),
                      ": no 'weight_map' object");
    for (const auto& kv : wm->as_object()) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, kv.value().is_string(), index_path.string(), ": weight_map entry '",
                        std::string(kv.key()), "' is not a file name");
      const std::string shard(kv.value().as_string());
      STRATA_CHECK_KIND(ErrorKind::kFormat, shard.find('/') == std::string::npos && shard != ".." && !shard.empty(),
                        index_path.string(), ": shard name '", shard, "' must be a file in the model directory");
      weight_map[std::string(kv.key())] = shard;
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
  } else {
    STRATA_CHECK_KIND(ErrorKind::kFormat, fs::exists(root / "model.safetensors"), dir,
                      ": neither model.safetensors nor model.safetensors.index.json is present");
    shards.push_back("model.safetensors");
  }

  // Every tensor of every shard first: a quantized layer's parts (qweight, scales, ...) may sit in different
  // shards, and are planned and transcoded together (hf_quant.h).
  struct FileTensor {
    std::string path, name;  // name: the language model's plain Hugging Face name
    SafetensorsTensor t;
    const uint8_t* data;
  };
  std::vector<FileTensor> tensors;
  std::vector<std::shared_ptr<MappedFile>> shard_files;
  for (const auto& shard : shards) {
    const std::string path = (root / shard).string();
    auto file = std::make_shared<MappedFile>(path);
    ckpt->add_file(file);
    shard_files.push_back(file);
    const SafetensorsHeader header = parse_safetensors_header(file->data(), file->size(), path);
    for (const auto& t : header.tensors) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(t.name);
        STRATA_CHECK_KIND(ErrorKind::kFormat, it != weight_map.end() && it->second == shard, path, ": tensor '",
                          t.name, "' is not listed for this shard in ", index_path.string());
        weight_map.erase(it);
      }
      tensors.push_back({path, llava ? llava_language_model_name(t.name) : t.name, t, file->data() + t.offset});
    }
  }
  const json::value* quant_config = raw_config.as_object().if_contains("quantization_config");
  if (quant_config != nullptr && !quant_config->is_null()) {
    const HfQuantization quant =
        parse_hf_quantization(json::serialize(*quant_config), config_path + " (quantization_config)");
    std::map<std::string, HfRawTensor> raw;
    for (const FileTensor& f : tensors)
      if (!f.name.empty()) raw[f.name] = HfRawTensor{f.path, f.t.dtype, f.t.shape, f.data, f.t.nbytes};
    auto layers = std::make_shared<TranscodedLayers>(quant, plan_hf_quantized(quant, raw), shard_files,
                                                     options.threads > 0 ? options.threads : hardware_threads());
    std::erase_if(tensors, [&](const FileTensor& f) { return !f.name.empty() && raw.count(f.name) == 0; });
    ckpt->add_file(layers->file());
    ckpt->set_lazy(layers);
    for (size_t i = 0; i < layers->size(); ++i) {
      const HfQuantLayer& l = layers->layer(i);
      const auto canonical = hf_to_canonical_name(l.weight_name, config.arch);
      if (!canonical) {
        LOG_DEBUG(dir, ": ignoring quantized layer '", l.weight_name, "' (not used by the model)");
        continue;
      }
      layers->bind(*canonical, i);
      TensorEntry e{*canonical, layers->file()->path(), l.described, l.dtype, l.shape, layers->offset(i), l.nbytes(),
                    l.input_scale};
      e.built_on_access = true;
      ckpt->add_entry(std::move(e));
    }
    LOG_INFO(dir, ": ", quant.method_name, " checkpoint, ", layers->size(), " quantized layers, each transcoded when ",
             "first read (", layers->file()->size(), " bytes in memory if all are)");
  }
  for (const FileTensor& f : tensors) {
    const auto canonical = f.name.empty() ? std::nullopt : hf_to_canonical_name(f.name, config.arch);
    if (!canonical) {
      LOG_DEBUG(f.path, ": ignoring tensor '", f.t.name, "' (not used by the model)");
      continue;
    }
    STRATA_CHECK_KIND(ErrorKind::kFormat, f.t.dtype != DType::kF8_E4M3 && f.t.dtype != DType::kI64, f.path, ": tensor '",
                      f.t.name, "' is ", dtype_name(f.t.dtype), " but ", config_path,
                      " has no quantization_config saying how to scale it; strata cannot use it");
    ckpt->add_entry(TensorEntry{*canonical, f.path, f.t.name, f.t.dtype, f.t.shape, f.t.offset, f.t.nbytes, {}});
  }
  if (!weight_map.empty())
    STRATA_THROW(ErrorKind::kFormat, index_path.string(), ": tensor '", weight_map.begin()->first,
                 "' is listed in shard '", weight_map.begin()->second, "' but that shard does not contain it");

  // Each layer has several tensors: more layers than tensors means the config does not describe the files.
  STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<size_t>(config.n_layers) <= ckpt->entries().size(), config_path,
                    ": num_hidden_layers = ", config.n_layers, " but the safetensors files hold ", ckpt->entries().size(),
                    " model tensors; the config does not describe these weights");
  // A checkpoint without lm_head.weight reuses the embedding; one that says it is untied must have it.
  if (!ckpt->has("output.weight")) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, !tie_explicit || config.tied_embeddings, dir,
                      ": tensor 'lm_head.weight' is missing but ", config_path,
                      " sets tie_word_embeddings=false; the checkpoint is incomplete");
    config.tied_embeddings = true;
  } else {
    config.tied_embeddings = false;
  }
  ckpt->finish();

  const fs::path tok_json = root / "tokenizer.json";
  const fs::path tok_config = root / "tokenizer_config.json";
  const fs::path tok_model = root / "tokenizer.model";
  if (fs::exists(tok_json)) {
    ckpt->set_tokenizer(load_tokenizer_json(tok_json.string(), fs::exists(tok_config) ? tok_config.string() : ""));
  } else if (fs::exists(tok_model)) {
    ckpt->set_tokenizer(load_sentencepiece_model(tok_model.string()));
  } else {
    LOG_WARN(dir, ": no tokenizer.json or tokenizer.model; the model can only take token ids");
  }
  return ckpt;
}

}  // namespace strata
