// launcher/kernel_options.h: the compute backend's settings from the command line: --kernel-options
// key=value,... (the CUDA kernels' forms, for A/B runs and tests/gpu's sweeps), --cuda-graphs on|off and
// --profile-ops. The environment variables STRATA_CUDA_GRAPHS and STRATA_CUDA_PROFILE are read here, and
// nowhere below the launcher. The options struct is CudaBackendOptions (a plain header, so every build
// parses and checks the same keys); a CPU device ignores them with a note.
#pragma once
#include <string>
#include <vector>

#include "runtime/cuda/cuda_backend.h"

namespace strata::launcher {

struct BackendSettings {
  CudaBackendOptions cuda;
  bool cpu_repack = true;  // make_cpu_backend's repack_weights (runtime/cpu/quant_repack.h)
  std::vector<std::string> kernel_keys;  // the keys --kernel-options set, in order (for the CPU's note)
};

// Applies "key=value,key=value" to `options`. Throws strata::Error (kInvalidArgument) naming the
// unknown key and listing the valid ones, or naming the key and its allowed values for a bad value.
// Returns the keys set.
std::vector<std::string> apply_kernel_options(const std::string& text, CudaBackendOptions& options);

// One line per key: name, allowed values, default, what it does (for --help and README.md).
std::string kernel_options_help();

// The settings of --kernel-options, --cuda-graphs and --profile-ops, over STRATA_CUDA_GRAPHS=0/1 and
// STRATA_CUDA_PROFILE=1 from the environment (flags win).
BackendSettings backend_settings(const std::string& kernel_options, const std::string& cuda_graphs, bool profile_ops);

}  // namespace strata::launcher
