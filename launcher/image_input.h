// launcher/image_input.h: images given on the command line for a LLaVA model: decoded, preprocessed as the
// checkpoint's image processor says, encoded by its vision tower on the session's backend, and spliced at
// the prompt's image placeholders.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/models/llava_prompt.h"

namespace strata::launcher {

// The LLaVA config of `model_path` when it is a LlavaForConditionalGeneration directory (config.json with
// model_type "llava" or "llava_next"); nullopt for any other model (a text-only directory, a GGUF or llama2.c file).
std::optional<LlavaConfig> llava_config_of(const std::string& model_path);

// Where a rank of a plan sits for its image prompts: its tensor-parallel group splits the vision tower
// (LlavaVision), which only the first pipeline stage runs (the stage that embeds tokens); later stages
// expand the prompt's placeholders alone. The defaults are a single rank.
struct VisionPlacement {
  Collective* tp = nullptr;
  bool first_stage = true;
};

// The placement of `session`'s rank: its TP group and whether its stage is the first.
VisionPlacement vision_placement(ModelSession& session);

// `model_dir` must be a LlavaForConditionalGeneration directory (config.json model_type "llava" or
// "llava_next"); errors name the file or the image. Every rank decodes the images (a bad image fails every rank alike).
ImagePrompt image_prompt(const std::string& model_dir, Backend& backend, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement = {});

// The files of an --image value: one path, or several separated by commas (in placeholder order).
std::vector<std::string> image_paths_of(const std::string& flag_value);

}  // namespace strata::launcher
