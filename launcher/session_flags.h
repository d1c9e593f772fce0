// launcher/session_flags.h: flags shared by every command that loads a model (--model, --device,
// --threads, ...) and the helpers that turn them into a ModelSession and prompts.
#pragma once
#include <string>
#include <vector>

#include "launcher/args.h"
#include "launcher/model_session.h"
#include "parallel/plan.h"

namespace strata::launcher {

std::vector<FlagSpec> session_flags();
// The session's options from the flags; with a plan (already parsed, once per process), its offload
// section for world rank `rank` first, the flags over it.
SessionOptions session_options(const Args& args, const parallel::Plan* plan = nullptr, int rank = 0);
// "1 2 3" or "1,2,3" -> ids; errors name the bad item.
std::vector<int32_t> parse_ids(const std::string& text);
// The prompt from --prompt (tokenized, BOS as the model says) or --prompt-ids.
std::vector<int32_t> prompt_from_args(const Args& args, const ModelSession& session);

}  // namespace strata::launcher
