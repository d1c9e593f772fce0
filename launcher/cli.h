// launcher/cli.h: the strata command line: parses the subcommand and dispatches to it.
#pragma once

namespace strata::launcher {
int run_cli(int argc, char** argv);
}  // namespace strata::launcher
