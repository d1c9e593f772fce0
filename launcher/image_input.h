// launcher/image_input.h: images given on the command line for a LLaVA model: decoded, preprocessed as the
// checkpoint's image processor says, encoded by its vision tower on the session's backend, and spliced at
// the prompt's image placeholders.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/llava_prompt.h"

namespace strata::launcher {

// The LLaVA config of `model_path` when it is a LlavaForConditionalGeneration directory (config.json with
// model_type "llava"); nullopt for any other model (a text-only directory, a GGUF or llama2.c file).
std::optional<LlavaConfig> llava_config_of(const std::string& model_path);

// `model_dir` must be a LlavaForConditionalGeneration directory (config.json model_type "llava"); errors
// name the file or the image.
ImagePrompt image_prompt(const std::string& model_dir, Backend& backend, const std::vector<int32_t>& ids,
                         const std::vector<std::string>& image_paths);

}  // namespace strata::launcher
