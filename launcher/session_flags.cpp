// launcher/session_flags.cpp: flags and prompt parsing shared by model commands.
#include "launcher/session_flags.h"

#include <cerrno>
#include <cstdlib>

#include "runtime/error.h"

namespace strata::launcher {

std::vector<FlagSpec> session_flags() {
  return {
      {"model", true, "model path: Hugging Face directory, .gguf file or llama2.c .bin"},
      {"plan", true, "YAML plan: run this rank's part of a multi-rank layout (under mpirun/srun)"},
      {"device", true, "cpu (default), cuda or cuda:N"},
      {"threads", true, "CPU threads (default: all cores)"},
      {"kv-tokens", true, "KV cache capacity in tokens (default: enough for the request)"},
      {"verbose", false, "log from every rank, with debug detail"},
      {"help", false, "show this help"},
  };
}

SessionOptions session_options(const Args& args) {
  SessionOptions o;
  if (!args.has("plan")) o.model_path = args.required("model");
  o.device = args.str("device", "cpu");
  o.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
  o.kv_tokens = args.integer("kv-tokens", 0, 0, int64_t{1} << 32);
  return o;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  const char* p = text.c_str();
  while (*p != '\0') {
    if (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') {
      ++p;
      continue;
    }
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(p, &end, 10);
    STRATA_CHECK(end != p && errno == 0 && v >= 0 && v <= INT32_MAX, "token ids must be non-negative integers "
                 "separated by spaces or commas; cannot read '", std::string(p).substr(0, 16), "'");
    ids.push_back(static_cast<int32_t>(v));
    p = end;
  }
  return ids;
}

std::vector<int32_t> prompt_from_args(const Args& args, const ModelSession& session) {
  STRATA_CHECK(args.has("prompt") != args.has("prompt-ids"), "give exactly one of --prompt TEXT or --prompt-ids \"1 2 3\"");
  std::vector<int32_t> ids = args.has("prompt") ? session.tokenizer().encode(args.str("prompt"), true)
                                                 : parse_ids(args.str("prompt-ids"));
  STRATA_CHECK(!ids.empty(), "the prompt is empty");
  return ids;
}

}  // namespace strata::launcher
