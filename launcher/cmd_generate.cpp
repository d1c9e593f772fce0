// launcher/cmd_generate.cpp: `strata generate`: streams the continuation of a prompt and reports
// prefill and decode rates.
#include <cstdio>

#include <algorithm>
#include <optional>

#include "launcher/commands.h"
#include "launcher/image_input.h"
#include "launcher/rank_runtime.h"
#include "launcher/session_flags.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {

namespace {

std::vector<FlagSpec> generate_flags() {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {
      {"prompt", true, "prompt text (needs a tokenizer)"},
      {"prompt-ids", true, "prompt token ids, e.g. \"1 2 3\""},
      {"image", true, "image file(s) (JPEG, PNG, WebP; comma-separated, in placeholder order) for a LLaVA "
       "model's image placeholders"},
      {"n", true, "tokens to generate (default 64)"},
      {"temperature", true, "0 = greedy (default)"},
      {"top-k", true, "keep the k most likely tokens (0 = off)"},
      {"top-p", true, "nucleus sampling mass (1 = off)"},
      {"min-p", true, "drop tokens below min-p x the top probability (0 = off)"},
      {"repetition-penalty", true, "penalty for tokens already seen (1 = off)"},
      {"seed", true, "random seed (default 0)"},
      {"batch", true, "run the prompt as B identical sequences (throughput runs)"},
      {"ignore-eos", false, "keep generating past end-of-sequence tokens"},
      {"print-ids", false, "also print the generated ids on one line"},
      {"quiet", false, "do not stream text"},
  });
  return flags;
}

int generate(const Args& args, SessionOptions options, RankRuntime* rank, const TokenHook& after_token) {
  const int64_t n = args.integer("n", 64, 1, 1 << 20);
  const int64_t batch = args.integer("batch", 1, 1, 4096);
  GenerationRequest request;
  request.max_new_tokens = n;
  request.sampling.temperature = static_cast<float>(args.number("temperature", 0, 0, 100));
  request.sampling.top_k = static_cast<int>(args.integer("top-k", 0, 0, 1 << 30));
  request.sampling.top_p = static_cast<float>(args.number("top-p", 1, 1e-6, 1));
  request.sampling.min_p = static_cast<float>(args.number("min-p", 0, 0, 0.999999));
  request.sampling.repetition_penalty = static_cast<float>(args.number("repetition-penalty", 1, 1e-3, 100));
  request.sampling.seed = static_cast<uint64_t>(args.integer("seed", 0, 0, INT64_MAX));

  const std::unique_ptr<ModelSession> owned = open_session(options, rank);
  ModelSession& session = *owned;
  request.prompt = prompt_from_args(args, session);
  std::optional<ImagePrompt> image;
  if (args.has("image")) {
    STRATA_CHECK(args.integer("batch", 1, 1, 4096) == 1, "--image runs one sequence; drop --batch");
    image = image_prompt(options, session, request.prompt, image_paths_of(args.str("image")), vision_placement(session));
    request.prompt = image->ids;
  }
  const ModelConfig& config = session.config();
  STRATA_CHECK(static_cast<int64_t>(request.prompt.size()) + n <= config.max_seq, "prompt (", request.prompt.size(),
               " tokens) + -n ", n, " exceeds the model's context of ", config.max_seq, " tokens; lower -n");
  if (!args.has("ignore-eos")) request.stop_ids = config.eos_ids;
  // Data-parallel replicas split the batch: replica d runs sequences d, d + DP, ...
  const int replicas = rank != nullptr ? rank->replicas() : 1, replica = rank != nullptr ? rank->replica_index() : 0;
  const int64_t local = batch / replicas + (replica < batch % replicas ? 1 : 0);
  std::vector<GenerationRequest> requests(static_cast<size_t>(local), request);
  // Each sequence rounds up to whole blocks: at most one block more than its tokens.
  session.prepare(std::max<int64_t>(1, local) * (static_cast<int64_t>(request.prompt.size()) + n + options.block_size));

  const bool prints = rank == nullptr || rank->prints();
  const bool stream = !args.has("quiet") && session.has_tokenizer() && prints;
  std::unique_ptr<TokenStreamDecoder> decoder;
  if (stream) {
    decoder = std::make_unique<TokenStreamDecoder>(session.tokenizer());
    std::printf("%s", session.tokenizer().decode(request.prompt).c_str());
    decoder->set_previous(request.prompt.back());  // context for the first piece's leading space
    std::fflush(stdout);
  }
  int64_t seen = 0;
  const int world_rank = rank != nullptr ? rank->world_rank() : 0;
  const auto outputs = session.generator().generate(requests, [&](size_t r, int32_t token) {
    ++seen;
    if (after_token) after_token(world_rank, seen);
    if (!stream || r != 0) return;
    std::printf("%s", decoder->push(token).c_str());
    std::fflush(stdout);
  }, image ? &image->splice : nullptr);
  if (!prints) return 0;
  if (stream) std::printf("%s\n", decoder->flush().c_str());
  if (args.has("print-ids")) {
    std::printf("ids:");
    for (int32_t id : outputs[0].tokens) std::printf(" %d", id);
    std::printf("\n");
  }
  std::fflush(stdout);  // the text comes before the rates, also when both go to one pipe
  const GenerationStats& s = session.generator().stats();
  const int64_t decoded = s.generated_tokens - local;  // the first token of each sequence comes from prefill
  // Alone, the rates go to stderr, apart from the text. Under mpirun, stdout and stderr reach the
  // terminal through separate forwarding, so a stderr line could land inside the streamed text: there
  // they follow it on stdout, whose order mpirun keeps.
  std::FILE* rates = rank != nullptr && rank->world_size() > 1 ? stdout : stderr;
  std::fprintf(rates, "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.1f tok/s)\n",
               static_cast<long long>(s.prompt_tokens), s.prefill_seconds,
               s.prefill_seconds > 0 ? s.prompt_tokens / s.prefill_seconds : 0.0, static_cast<long long>(decoded),
               s.decode_seconds, s.decode_seconds > 0 ? decoded / s.decode_seconds : 0.0);
  if (options.speculative.on())
    std::fprintf(rates, "speculative (%s, %d tokens): %lld of %lld drafts accepted (%.1f%%), %.2f tokens per decode step\n",
                 options.speculative.method.c_str(), options.speculative.tokens,
                 static_cast<long long>(s.spec_accepted_tokens), static_cast<long long>(s.spec_draft_tokens),
                 s.spec_draft_tokens > 0 ? 100.0 * s.spec_accepted_tokens / s.spec_draft_tokens : 0.0,
                 s.decode_steps > 0 ? static_cast<double>(decoded) / static_cast<double>(local) / s.decode_steps : 0.0);
  return 0;
}

int run(const Args& args, const TokenHook& after_token) {
  return run_with_plan(args,
                       [&](const SessionOptions& o, RankRuntime* rank) { return generate(args, o, rank, after_token); });
}

}  // namespace

int cmd_generate(int argc, char** argv) { return cmd_generate_with_hook(argc, argv, {}); }

int cmd_generate_with_hook(int argc, char** argv, const TokenHook& after_token) {
  const Args args("generate", generate_flags(), argc, argv, 2);
  if (args.has("verbose")) {
    log::set_level(log::Level::kDebug);
    log::set_all_ranks(true);
  }
  return run(args, after_token);
}

}  // namespace strata::launcher
