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
#include "runtime/vision/preprocess.h"

namespace strata::launcher {

// The LLaVA config of `model_path` when it is a LlavaForConditionalGeneration directory (config.json with
// model_type "llava" or "llava_next"); nullopt for any other model (a text-only directory, a GGUF or llama2.c file).
std::optional<LlavaConfig> llava_config_of(const std::string& model_path);

// A LLaVA model's vision side as the commands load it: from a LlavaForConditionalGeneration directory, or
// from llama.cpp's pair, a text-model GGUF plus an mmproj GGUF (SessionOptions::mmproj_path).
struct VisionModel {
  LlavaConfig config;
  std::string weights;  // the directory or the mmproj file (load_llava_vision_weights reads either)
  vision::ImageProcessorConfig processor;
};

// The token a GGUF pair's prompts mark an image with: the text model's "<image>" token (llama.cpp's converter
// keeps it in the vocabulary of checkpoints that have one, e.g. llava-hf's); errors name `model_path` and say
// so when the vocabulary has none.
int32_t image_token_of(const Tokenizer* tokenizer, const std::string& model_path);

// The vision side of `options`' model: the mmproj pair when options.mmproj_path is set (its text width and
// image token from `session`), else the LLaVA directory's; nullopt for a text-only model. A --mmproj beside
// a LLaVA directory, which has its own tower, is an error.
std::optional<VisionModel> vision_model_of(const SessionOptions& options, const ModelSession& session);

// Where a rank of a plan sits for its image prompts: its tensor-parallel group splits the vision tower
// (LlavaVision), which only the first pipeline stage runs (the stage that embeds tokens); later stages
// expand the prompt's placeholders alone. The defaults are a single rank.
struct VisionPlacement {
  Collective* tp = nullptr;
  bool first_stage = true;
};

// The placement of `session`'s rank: its TP group and whether its stage is the first.
VisionPlacement vision_placement(ModelSession& session);

// The images decoded, preprocessed as `model` says, encoded and spliced at the prompt's placeholders (each
// expanded to its image's feature count: LLaVA-NeXT's depends on the image size); errors name the file or
// the image. Every rank decodes the images (a bad image fails every rank alike).
ImagePrompt image_prompt(const VisionModel& model, Backend& backend, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement = {});
// The same for the model of `options` / `session` (vision_model_of); a text-only model is an error.
ImagePrompt image_prompt(const SessionOptions& options, ModelSession& session, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths, const VisionPlacement& placement = {});

// The files of an --image value: one path, or several separated by commas (in placeholder order).
std::vector<std::string> image_paths_of(const std::string& flag_value);

}  // namespace strata::launcher
