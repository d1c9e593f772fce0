// tests/e2e/strata_fault_main.cpp: `strata_fault generate ...` is `strata generate ...` with one rank made to
// fail, for the tests of rank failure (cli_test's RankThatDiesEndsTheJobWithAnError). Test-only: the strata
// executable has no fault injection. STRATA_FAULT_RANK=r STRATA_FAULT_TOKEN=k (default 1) makes world rank r
// exit (STRATA_FAULT_MODE=exit, the default) or stop responding (hang) after its k-th token.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

#include "launcher/commands.h"
#include "runtime/error.h"
#include "runtime/log.h"

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "generate") != 0) {
    std::fprintf(stderr, "usage: strata_fault generate [strata generate's flags]\n");
    return 2;
  }
  const char* rank_env = std::getenv("STRATA_FAULT_RANK");
  const char* token_env = std::getenv("STRATA_FAULT_TOKEN");
  const char* mode_env = std::getenv("STRATA_FAULT_MODE");
  const int fault_rank = rank_env != nullptr ? std::atoi(rank_env) : -1;
  const int64_t fault_token = token_env != nullptr ? std::atoll(token_env) : 1;
  const bool hang = mode_env != nullptr && std::string(mode_env) == "hang";
  const strata::launcher::TokenHook fault = [&](int world_rank, int64_t tokens) {
    if (world_rank != fault_rank || tokens != fault_token) return;
    LOG_WARN("fault injection: rank ", world_rank, hang ? " hangs" : " exits", " after ", tokens, " tokens");
    if (hang)
      while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
    std::_Exit(3);
  };
  try {
    return strata::launcher::cmd_generate_with_hook(argc, argv, fault);
  } catch (const strata::Error& e) {
    std::fprintf(stderr, "strata_fault generate: %s: %s\n", strata::error_kind_name(e.kind()), e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata_fault generate: unexpected error: %s\n", e.what());
  }
  return 1;
}
