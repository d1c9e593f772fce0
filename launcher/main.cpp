// launcher/main.cpp: entry point of the strata executable; everything lives in strata_launcher.
#include "launcher/cli.h"

int main(int argc, char** argv) { return strata::launcher::run_cli(argc, argv); }
