// launcher/cmd_tools.cpp: `strata tokenize`, `strata logits` and `strata perplexity`: the small
// tools users need to check a model (and, later, what quantization costs).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "launcher/commands.h"
#include "launcher/image_input.h"
#include "launcher/rank_runtime.h"
#include "launcher/session_flags.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/sampler.h"

namespace strata::launcher {
namespace {
void apply_verbose(const Args& args) {
  if (!args.has("verbose")) return;
  log::set_level(log::Level::kDebug);
  log::set_all_ranks(true);
}
int print_logits(const Args& args, const SessionOptions& options, RankRuntime* rank);
}  // namespace

int cmd_tokenize(int argc, char** argv) {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {{"text", true, "text to tokenize"}, {"no-bos", false, "do not add BOS/EOS tokens"},
                             {"pieces", false, "also print each token's piece"}});
  const Args args("tokenize", flags, argc, argv, 2);
  apply_verbose(args);
  const std::string path = args.required("model");
  const std::unique_ptr<Checkpoint> checkpoint = open_checkpoint(path);
  STRATA_CHECK(checkpoint->tokenizer().has_value(), "the model ", path, " has no tokenizer");
  const auto tokenizer = Tokenizer::create(*checkpoint->tokenizer());
  const std::vector<int32_t> ids = tokenizer->encode(args.required("text"), !args.has("no-bos"));
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
  std::printf("\n");
  if (args.has("pieces"))
    for (int32_t id : ids) std::printf("%d\t%s\n", id, tokenizer->id_to_piece(id).c_str());
  return 0;
}

int cmd_logits(int argc, char** argv) {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {{"prompt", true, "prompt text"},
                             {"prompt-ids", true, "prompt token ids"},
                             {"image", true,
                              "image file(s) (JPEG, PNG, WebP; comma-separated, in placeholder order) for a "
                              "LLaVA model's image placeholders"},
                             {"json", false, "print JSON (the default)"},
                             {"all", false, "print every position, not only the last"}});
  const Args args("logits", flags, argc, argv, 2);
  apply_verbose(args);
  return run_with_plan(args,
                       [&](const SessionOptions& o, RankRuntime* rank) { return print_logits(args, o, rank); });
}

namespace {
int print_logits(const Args& args, const SessionOptions& options, RankRuntime* rank) {
  const std::unique_ptr<ModelSession> owned = open_session(options, rank);
  ModelSession& session = *owned;
  std::vector<int32_t> ids = prompt_from_args(args, session);
  std::optional<ImagePrompt> image;
  if (args.has("image")) {
    image = image_prompt(options, session, ids, image_paths_of(args.str("image")), vision_placement(session));
    ids = image->ids;
  }
  session.prepare(static_cast<int64_t>(ids.size()) + 16);
  const Tensor logits = session.generator().score(ids, image ? &image->splice : nullptr);
  if (rank != nullptr && !rank->prints()) return 0;
  const int64_t V = logits.dim(1), T = logits.dim(0);
  const int64_t first = args.has("all") ? 0 : T - 1;
  std::printf("{\"ids\": [");
  for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? ", " : "", ids[i]);
  std::printf("], \"vocab_size\": %lld, \"logits\": [", static_cast<long long>(V));
  for (int64_t t = first; t < T; ++t) {
    std::printf("%s[", t > first ? ", " : "");
    for (int64_t v = 0; v < V; ++v) std::printf("%s%.9g", v ? ", " : "", logits.data<float>()[t * V + v]);
    std::printf("]");
  }
  std::printf("]}\n");
  return 0;
}
}  // namespace

int cmd_perplexity(int argc, char** argv) {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {{"text-file", true, "text to score"},
                             {"context", true, "tokens per window (default: the model's context)"}});
  const Args args("perplexity", flags, argc, argv, 2);
  apply_verbose(args);
  const std::unique_ptr<ModelSession> owned = open_session(session_options(args), nullptr);
  ModelSession& session = *owned;
  const std::string path = args.required("text-file");
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "cannot read --text-file ", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::vector<int32_t> ids = session.tokenizer().encode(buffer.str(), true);
  const int64_t ctx = args.integer("context", session.config().max_seq, 2, session.config().max_seq);
  STRATA_CHECK(ids.size() >= 2, path, " holds fewer than two tokens; nothing to score");
  session.prepare(ctx + 16);
  // Non-overlapping windows: each scores its tokens 1.. given the ones before inside the window.
  double nll = 0;
  int64_t counted = 0;
  for (size_t begin = 0; begin + 1 < ids.size(); begin += static_cast<size_t>(ctx)) {
    const size_t end = std::min(ids.size(), begin + static_cast<size_t>(ctx));
    const std::vector<int32_t> window(ids.begin() + static_cast<std::ptrdiff_t>(begin),
                                      ids.begin() + static_cast<std::ptrdiff_t>(end));
    if (window.size() < 2) break;
    const Tensor logits = session.generator().score(window);
    const int64_t V = logits.dim(1);
    for (size_t t = 0; t + 1 < window.size(); ++t) {
      const std::span<const float> row(logits.data<float>() + static_cast<int64_t>(t) * V, static_cast<size_t>(V));
      nll -= Sampler::log_prob(row, window[t + 1]);
      ++counted;
    }
  }
  if (session.link().is_driver())
    std::printf("perplexity: %.4f over %lld tokens (mean NLL %.5f nats)\n", std::exp(nll / counted),
                static_cast<long long>(counted), nll / counted);
  return 0;
}

}  // namespace strata::launcher
