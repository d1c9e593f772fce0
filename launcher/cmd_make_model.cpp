// launcher/cmd_make_model.cpp: `strata make-model`: random-weight checkpoints of named shapes, for
// tests, the demo and benchmarks.
#include <algorithm>
#include <cstdio>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "launcher/progress.h"
#include "runtime/error.h"
#include "runtime/formats/model_writer.h"
#include "runtime/model_presets.h"

namespace strata::launcher {

int cmd_make_model(int argc, char** argv) {
  std::string presets;
  for (const auto& p : model_preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  const Args args("make-model", {{"preset", true, "shape: " + presets},
                                 {"format", true, "safetensors (default) or gguf"},
                                 {"dtype", true,
                                  "f32, f16 (default), bf16; gguf also " + quantized_dtype_names() +
                                      " and q4_k_m (q4_k, q6_k for the head and some attn_v/ffn_down)"},
                                 {"seed", true, "random seed (default 1)"},
                                 {"out", true, "output directory (safetensors) or .gguf file"},
                                 {"hidden", true, "override the preset's hidden size"},
                                 {"layers", true, "override the preset's layer count (e.g. the first N layers of a big shape)"},
                                 {"heads", true, "override the preset's attention heads (head size = hidden / heads)"},
                                 {"kv-heads", true, "override the preset's key/value heads"},
                                 {"ffn", true, "override the preset's feed-forward size"},
                                 {"vocab", true, "override the preset's vocabulary size"},
                                 {"context", true, "override the preset's context length (max_position_embeddings)"}},
                  argc, argv, 2);
  MakeModelOptions options;
  options.preset = args.required("preset");
  options.format = args.str("format", "safetensors");
  STRATA_CHECK(options.format == "safetensors" || options.format == "gguf", "--format must be safetensors or gguf, got '",
               options.format, "'");
  options.dtype = args.str("dtype", "f16");
  if (options.dtype != "q4_k_m") options.dtype = dtype_name(dtype_from_name(options.dtype));  // validates the name
  options.seed = static_cast<uint64_t>(args.integer("seed", 1, 0, INT64_MAX));
  options.out = args.required("out");
  ModelConfig config = model_preset(options.preset);  // validates the name before any writing
  const bool reshaped = args.has("hidden") || args.has("layers") || args.has("heads") || args.has("kv-heads") ||
                        args.has("ffn") || args.has("vocab") || args.has("context");
  if (reshaped) {  // a preset with other sizes (tests and fixtures that need, say, rows of 256)
    config.hidden = args.integer("hidden", config.hidden, 1, 1 << 20);
    config.n_layers = args.integer("layers", config.n_layers, 1, 4096);
    std::erase_if(config.moe.dense_layers, [&](int64_t l) { return l >= config.n_layers; });
    config.n_heads = args.integer("heads", config.n_heads, 1, 4096);
    config.n_kv_heads = args.integer("kv-heads", std::min(config.n_kv_heads, config.n_heads), 1, 4096);
    config.ffn = args.integer("ffn", config.ffn, 1, 1 << 22);
    config.vocab_size = args.integer("vocab", config.vocab_size, 1, 1 << 24);
    config.max_seq = args.integer("context", config.max_seq, 1, int64_t{1} << 24);
    config.head_dim = config.hidden / config.n_heads;
    STRATA_CHECK(config.head_dim * config.n_heads == config.hidden, "--heads ", config.n_heads,
                 " must divide --hidden ", config.hidden);
    config.validate("make-model with --hidden/--layers/--heads/--kv-heads/--ffn/--vocab/--context");
    options.config = config;
  }
  {  // a 7b-shape model takes minutes to write: show the bytes on disk against the expected total
    const std::string out = make_model_output_path(options);
    const DType dtype = options.dtype == "q4_k_m" ? DType::kQ4_K : dtype_from_name(options.dtype);  // about
    const int64_t blocks = (config.parameter_count() + dtype_block_elems(dtype) - 1) / dtype_block_elems(dtype);
    const int64_t expected = blocks * dtype_block_bytes(dtype);
    const Progress progress(
        cat("writing ", out),
        [out, expected] { return cat(path_bytes(out) * 100 / std::max<int64_t>(1, expected), "% of the weights"); },
        wants_progress(expected));
    make_model(options);
  }
  std::printf("wrote %s model '%s' (%.1fM parameters, %s) to %s\n", options.format.c_str(), options.preset.c_str(),
              static_cast<double>(config.parameter_count()) / 1e6, options.dtype.c_str(),
              make_model_output_path(options).c_str());
  return 0;
}

}  // namespace strata::launcher
