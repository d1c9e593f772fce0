// launcher/cli.cpp: subcommand dispatch and the outermost error handler: a strata::Error becomes a
// one-line message and a non-zero exit, never an abort with a stack of frames.
#include "launcher/cli.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "launcher/commands.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {
struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};
const Command kCommands[] = {
    {"generate", cmd_generate, "generate a continuation of a prompt (text or ids)"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (streaming, metrics)"},
    {"router", cmd_router, "one OpenAI-compatible front over serve replicas: health checks, retries, routing"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"logits", cmd_logits, "print the last position's logits of a prompt"},
    {"perplexity", cmd_perplexity, "perplexity of a text file under the model"},
    {"make-model", cmd_make_model, "write a random-weight model (tiny, small, 7b-shape, ...)"},
    {"plan", cmd_plan, "validate a YAML plan and show what each rank holds"},
    {"bench", cmd_bench, "benchmarks: memory, decode, serve (HTTP load), scaling (plan sweeps), disk (read rate)"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "strata: serve large language models across GPUs and machines\n\nusage: strata <command> [flags]\n\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.help);
  std::fprintf(out, "\n`strata <command> --help` lists a command's flags.\n");
}
}  // namespace

int run_cli(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("strata 0.1.0\n");
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc, argv);
    } catch (const Error& e) {
      std::fprintf(stderr, "strata %s: %s: %s\n", c.name, error_kind_name(e.kind()), e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "strata %s: unexpected error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "strata: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}

}  // namespace strata::launcher
