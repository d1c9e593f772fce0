// launcher/commands.h: the subcommands of the strata executable. Each parses its own flags and
// returns the process exit code; errors are thrown as strata::Error and reported by run_cli.
#pragma once
#include <cstdint>
#include <functional>

namespace strata::launcher {

int cmd_generate(int argc, char** argv);    // generate text or ids
// Called on every rank after each token it generates, with its world rank and its tokens so far.
using TokenHook = std::function<void(int world_rank, int64_t tokens)>;
// cmd_generate with a hook (tests/e2e/strata_fault_main.cpp injects rank failures through it; the strata
// executable passes none).
int cmd_generate_with_hook(int argc, char** argv, const TokenHook& after_token);
int cmd_serve(int argc, char** argv);       // OpenAI-compatible HTTP server
int cmd_router(int argc, char** argv);      // one front over several serve replicas
int cmd_tokenize(int argc, char** argv);    // text -> ids
int cmd_logits(int argc, char** argv);      // last-position logits as JSON
int cmd_perplexity(int argc, char** argv);  // perplexity of a text file
int cmd_make_model(int argc, char** argv);  // random-weight checkpoints
int cmd_quantize(int argc, char** argv);    // a checkpoint to a quantized GGUF
int cmd_plan(int argc, char** argv);        // validate and describe a YAML plan
int cmd_bench(int argc, char** argv);       // benchmarks: memory, decode, serve
int cmd_bench_serve(int argc, char** argv); // `bench serve`: HTTP load against a running server

}  // namespace strata::launcher
