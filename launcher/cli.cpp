// launcher/cli.cpp: subcommand dispatch (being built up; see issue #3).
#include "launcher/cli.h"

#include <cstdio>

namespace strata::launcher {
int run_cli(int argc, char** argv) {
  std::fprintf(stderr, "usage: strata <generate|tokenize|logits|perplexity|make-model|plan|serve|bench> ...\n");
  return 2;
}
}  // namespace strata::launcher
