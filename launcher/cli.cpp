// launcher/cli.cpp: subcommand dispatch and the outermost error handler: a strata::Error becomes a
// one-line message and a non-zero exit, never an abort with a stack of frames.
#include "launcher/cli.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "runtime/error.h"
#include "runtime/log.h"

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
    {"quantize", cmd_quantize, "write a checkpoint as a quantized GGUF (q8_0 ... q6_k, q4_k_m, q5_k_m)"},
    {"plan", cmd_plan, "validate a YAML plan and show what each rank holds"},
    {"bench", cmd_bench, "benchmarks: memory, decode, serve (HTTP load), scaling (plan sweeps), disk (read rate)"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "strata: serve large language models across GPUs and machines\n\nusage: strata <command> [flags]\n\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.help);
  std::fprintf(out, "\n`strata <command> --help` lists a command's flags.\n");
}

// A binary built for x86-64-v3 (the default) on a CPU without AVX2/FMA would die of SIGILL somewhere
// inside a kernel; say what is wrong instead, before any of that code runs.
bool cpu_lacks_build_isa() {
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::fprintf(stderr, "strata: this binary was built for CPUs with AVX2 and FMA (x86-64-v3), which this CPU "
                         "lacks; rebuild on this machine with -DSTRATA_NATIVE=ON\n");
    return true;
  }
#endif
  return false;
}

// "generate", or "bench decode" for a command with subcommands: how messages name what ran.
std::string command_label(const Command& c, int argc, char** argv) {
  std::string label = c.name;
  if (!std::strcmp(c.name, "bench") && argc > 2 && argv[2][0] != '-') label += cat(" ", argv[2]);
  return label;
}
}  // namespace

int run_cli(int argc, char** argv) {
  if (cpu_lacks_build_isa()) return 1;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("strata 0.1.0\n");
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    const std::string label = command_label(c, argc, argv);
    try {
      return c.run(argc, argv);
    } catch (const HelpRequested& help) {
      std::printf("%s", help.usage.c_str());
      return 0;
    } catch (const Error& e) {
      // The message once, with its kind; where it was raised goes to the debug log (--verbose).
      LOG_DEBUG("the error below was raised at ", e.location());
      const std::string message = e.what();
      const bool ends_line = !message.empty() && message.back() == '\n';
      if (e.kind() == ErrorKind::kInvalidArgument)
        std::fprintf(stderr, "strata %s: %s%s", label.c_str(), message.c_str(), ends_line ? "" : "\n");
      else
        std::fprintf(stderr, "strata %s: %s: %s%s", label.c_str(), error_kind_name(e.kind()), message.c_str(),
                     ends_line ? "" : "\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "strata %s: unexpected error: %s\n", label.c_str(), e.what());
      return 1;
    }
  }
  std::vector<std::string> names;
  for (const Command& c : kCommands) names.push_back(c.name);
  const std::string best = nearest(argv[1], names);
  std::fprintf(stderr, "strata: unknown command '%s'%s\n\n", argv[1],
               best.empty() ? "" : cat(" (did you mean '", best, "'?)").c_str());
  print_usage(stderr);
  return 2;
}

}  // namespace strata::launcher
