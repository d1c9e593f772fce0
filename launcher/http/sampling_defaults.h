// launcher/http/sampling_defaults.h: how a request that leaves sampling fields out is sampled. As the
// OpenAI API defines it (temperature 1, top_p 1), unless the model's Hugging Face directory has a
// generation_config.json: then its temperature, top_p, top_k, min_p and repetition_penalty, as
// vLLM does. A request's own fields always win; with no seed, each request draws a fresh one.
#pragma once
#include <string>

#include "runtime/sampling_params.h"

namespace strata::launcher::http {

SamplingParams openai_sampling_defaults();

// The defaults for the model at `model_path` (a directory or a file); `source` gets a phrase saying
// where they came from ("OpenAI's defaults" or the file's path). Throws strata::Error (kFormat) naming
// the file and field for a generation_config.json that is not valid.
SamplingParams sampling_defaults_for(const std::string& model_path, std::string* source);

}  // namespace strata::launcher::http
