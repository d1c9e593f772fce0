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
                                 {"layers", true, "keep the preset's first N layers (a slice of a big shape that fits)"},
                                 {"out", true, "output directory (safetensors) or .gguf file"}},
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
  if (args.has("layers")) {
    config.n_layers = args.integer("layers", config.n_layers, 1, config.n_layers);
    std::erase_if(config.moe.dense_layers, [&](int64_t l) { return l >= config.n_layers; });
    options.config = config;
  }
  {  // a 7b-shape model takes minutes to write: show the bytes on disk against the expected total
    const std::string out = make_model_output_path(options);
    const DType dtype = dtype_from_name(options.dtype);
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
