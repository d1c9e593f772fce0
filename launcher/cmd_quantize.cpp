// launcher/cmd_quantize.cpp: `strata quantize`: a checkpoint to a block-quantized GGUF (the work is
// runtime/formats/quantize.h) or, for the calibrated types, to a compressed-tensors Hugging Face directory
// (runtime/formats/calibrated_quantize.h), with a progress bar and a summary of what each tensor became.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "launcher/progress.h"
#include "runtime/error.h"
#include "runtime/formats/calibrated_quantize.h"
#include "runtime/formats/quantize.h"

namespace strata::launcher {

namespace {

std::string bar(int64_t done, int64_t total) {
  constexpr int kWidth = 30;
  const int64_t pct = total > 0 ? std::min<int64_t>(100, done * 100 / total) : 0;
  const int filled = static_cast<int>(pct * kWidth / 100);
  return cat("[", std::string(static_cast<size_t>(filled), '#'), std::string(static_cast<size_t>(kWidth - filled), ' '),
             "] ", pct, "%");
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  const Args args("quantize",
                  {{"model", true, "source checkpoint: Hugging Face directory (f32/f16/bf16 safetensors), .gguf or llama2.c .bin "
                                    "(the calibrated types need a Hugging Face directory)"},
                   {"type", true, "output type: GGUF " + quant_type_names() +
                                      " (q3_k, q4_k and q5_k are the _m mixes, as in llama-quantize; the _s/_m/_l mixes, q2_k's "
                                      "and iq4's per-tensor types and the head's q6_k follow llama-quantize); or "
                                      "calibrated, written as compressed-tensors safetensors: w8a8-int8 (SmoothQuant, "
                                      "int8 per-channel weights, dynamic per-token int8 activations), fp8 (e4m3 per-channel "
                                      "weights), w4a16 (AWQ-scaled group-wise int4)"},
                   {"out", true, "the .gguf file to write (calibrated types: the directory)"},
                   {"calibration", true, "text file the unquantized model runs on to measure activations (w8a8-int8, "
                                         "w4a16, fp8 with --activation-scales static)"},
                   {"alpha", true, "w8a8-int8: SmoothQuant migration strength in [0, 1] (default 0.5)"},
                   {"group-size", true, "w4a16: input columns per scale (default 128; 0 = one scale per row)"},
                   {"activation-scales", true, "fp8: dynamic (per token, the default) or static (per tensor, from calibration)"},
                   {"calibration-tokens", true, "use at most this many tokens of the calibration text (default: all)"},
                   {"calibration-context", true, "tokens per calibration window (default 512)"},
                   {"awq-rows", true, "w4a16: activation rows sampled per input for the scale search (default 512)"},
                   {"no-smoothing", false, "w8a8-int8 / w4a16 without SmoothQuant / AWQ factors (plain rounding, to compare)"},
                   {"clip-search", false, "w4a16: clip each group's scale where that lowers the layer's output error on "
                                          "the calibration rows (best with --no-smoothing; README has the numbers)"},
                   {"smooth-only", false, "apply the smoothing / AWQ scales but write the weights unquantized (a check)"},
                   {"force", false, "overwrite --out when it exists"},
                   {"pure", false, "every matrix at the --type (no mix, no q6_k head)"},
                   {"f16-fallback", false, "write tensors whose rows do not divide the type's block as f16 (llama-quantize's way) instead of failing"},
                   {"threads", true, "threads (default: all cores)"}},
                  argc, argv, 2);
  QuantizeOptions o;
  o.model = args.required("model");
  o.type = args.required("type");
  if (!calibrated_type(o.type)) quant_recipe(o.type);  // an unknown type fails before the model is opened
  o.out = args.required("out");
  o.calibration = args.str("calibration");
  o.alpha = static_cast<float>(args.number("alpha", 0.5, 0.0, 1.0));
  o.group_size = args.integer("group-size", 128, 0, 1 << 20);
  const std::string activation_scales = args.str("activation-scales", "dynamic");
  STRATA_CHECK(activation_scales == "dynamic" || activation_scales == "static",
               "--activation-scales must be dynamic or static, got '", activation_scales, "'");
  o.static_activations = activation_scales == "static";
  o.calibration_tokens = args.integer("calibration-tokens", 0, 0, int64_t{1} << 40);
  o.calibration_context = args.integer("calibration-context", 512, 2, 1 << 20);
  o.awq_rows = args.integer("awq-rows", 512, 1, 1 << 20);
  o.smooth_only = args.has("smooth-only");
  o.smoothing = !args.has("no-smoothing");
  o.clip_search = args.has("clip-search");
  o.force = args.has("force");
  o.pure = args.has("pure");
  o.f16_fallback = args.has("f16-fallback");
  o.threads = static_cast<int>(args.integer("threads", 0, 0, 4096));

  QuantizeProgress progress;
  const auto start = std::chrono::steady_clock::now();
  QuantizeResult result;
  {
    const Progress line(
        cat("quantizing ", o.model, " to ", o.type),
        [&progress] { return bar(progress.elements_done.load(), progress.elements_total.load()); },
        wants_progress(path_bytes(o.model)), std::chrono::milliseconds(500));
    result = quantize_model(o, &progress);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::map<std::string, std::pair<int, int64_t>> by_type;  // type -> tensors, elements
  int fallbacks = 0;
  for (const QuantizedTensor& t : result.tensors) {
    auto& [count, elements] = by_type[dtype_name(t.dtype)];
    ++count;
    elements += shape_numel(t.shape);
    fallbacks += t.fallback ? 1 : 0;
  }
  std::string types;
  for (const auto& [name, ce] : by_type) types += cat(types.empty() ? "" : ", ", name, " x", ce.first);
  if (const auto calibrated = calibrated_type(o.type))
    types = cat(result.tensors.size(), " linear layers as ", o.smooth_only ? "smoothed, unquantized" :
                *calibrated == CalibratedType::kW8A8Int8 ? "int8 per channel" :
                *calibrated == CalibratedType::kFp8 ? "fp8 e4m3 per channel" :
                o.group_size > 0 ? cat("int4 in groups of ", o.group_size) : std::string("int4 per channel"),
                ", compressed-tensors");
  std::printf("wrote %s: %zu tensors (%s)%s\n", o.out.c_str(), result.tensors.size(), types.c_str(),
              fallbacks > 0 ? cat("; ", fallbacks, " tensors fell back (rows not a multiple of the block)").c_str()
                            : "");
  std::printf("%.1f MiB -> %.1f MiB, %.2f bits per weight, %.1f s\n", static_cast<double>(result.source_bytes) / (1 << 20),
              static_cast<double>(result.output_bytes) / (1 << 20),
              8.0 * static_cast<double>(result.output_bytes) / static_cast<double>(std::max<int64_t>(1, result.parameters)),
              seconds);
  for (const std::string& note : result.notes) std::printf("%s\n", note.c_str());
  return 0;
}

}  // namespace strata::launcher
