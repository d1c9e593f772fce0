// launcher/kernel_options.cpp: see kernel_options.h.
#include "launcher/kernel_options.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "runtime/error.h"

namespace strata::launcher {
namespace {

// One settable field of CudaBackendOptions: an int or a bool (0/1), with the values it takes.
struct KernelOption {
  const char* key;
  int CudaBackendOptions::*int_field = nullptr;
  bool CudaBackendOptions::*bool_field = nullptr;
  std::vector<int> allowed;  // for int fields
  const char* help;
};

const std::vector<KernelOption>& kernel_option_table() {
  using O = CudaBackendOptions;
  static const std::vector<KernelOption> table = {
      {"gemv_max_rows", &O::gemv_max_rows, nullptr, {0, 1, 2, 3, 4, 5, 6, 7, 8},
       "rows of x up to which matmul uses the GEMV (above: cuBLAS)"},
      {"gemv_rolling", &O::gemv_rolling, nullptr, {0, 1, 2},
       "one-row GEMV kernel: 0 pipelined where the grid is at most two waves, 1 never, 2 always"},
      {"fuse_rope_kv_write", nullptr, &O::fuse_rope_kv_write, {}, "rope of q and k and the KV-cache write in one kernel"},
      {"decode_attention_warps", nullptr, &O::decode_attention_warps, {}, "decode attention in the per-warp kernel"},
      {"fuse_rope_attention", nullptr, &O::fuse_rope_attention, {},
       "decode steps fold rope and the KV-cache write into the attention"},
      {"decode_split_grain", &O::decode_split_grain, nullptr, {16, 32, 64, 128},
       "decode attention: keys a split's length is a multiple of"},
      {"decode_split_max_keys", &O::decode_split_max_keys, nullptr, {0, 256, 512, 1024, 2048, 4096},
       "decode attention: at most this many keys a split (0: no bound), for long contexts"},
      {"decode_split_by_length", nullptr, &O::decode_split_by_length, {},
       "decode attention: each token's keys over all splits (recorded steps plan for the table's width)"},
      {"decode_whole_blocks", nullptr, &O::decode_whole_blocks, {},
       "decode attention: short contexts in one wider block per KV head"},
      {"decode_head_split", &O::decode_head_split, nullptr, {0, 1, 2, 4, 8},
       "decode attention: blocks a KV head's query heads go over (0: the rule)"},
      {"decode_kv_ring", nullptr, &O::decode_kv_ring, {},
       "decode attention: split blocks load K and V through a cp.async ring, scores summed by a butterfly"},
      {"fuse_swiglu", nullptr, &O::fuse_swiglu, {}, "decode batches form the SwiGLU in the gate/up GEMV"},
      {"moe_grouped", nullptr, &O::moe_grouped, {}, "mixture-of-experts: the selected experts in grouped launches"},
      {"moe_device_route", nullptr, &O::moe_device_route, {},
       "... decode steps of resident experts routed on the device (no host sync; CUDA graphs)"},
      {"moe_gemv_max_rows", &O::moe_gemv_max_rows, nullptr, {0, 1, 2, 3, 4, 5, 6, 7, 8},
       "... as grouped GEMVs while every expert has at most this many rows (above: grouped GEMM)"},
      {"moe_gemm", &O::moe_gemm, nullptr, {0, 1, 2},
       "... the grouped GEMM: 0 cuBLAS's, 1 the tensor-core kernel, 2 the kernel for many experts of many rows"},
      {"pdl", nullptr, &O::pdl, {}, "programmatic dependent launch between kernels (Hopper and later)"},
      {"cublaslt", nullptr, &O::cublaslt, {}, "f32-output matmuls (the LM head) through cuBLASLt"},
      {"encoder_flash_attention", nullptr, &O::encoder_flash_attention, {},
       "vision-tower attention (bf16, head_dim 64/128) on the tensor-core prefill kernel"},
      {"prefill_mma_fp8_kv", nullptr, &O::prefill_mma_fp8_kv, {},
       "prefill attention over fp8 KV caches on the tensor-core kernel (else the SIMT one)"},
      {"fp8_cublaslt", &O::fp8_cublaslt, nullptr, {0, 1, 2},
       "f8_e4m3_b128 matmuls above the GEMV's rows on the e4m3 tensor cores (cuBLASLt): 0 off (dequantize to "
       "bf16), 1 weights split per call, 2 split copies kept from load (more device memory)"},
      {"quant_mma_min_rows", &O::quant_mma_min_rows, nullptr, {1, 2, 3, 4, 8, 16},
       "Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K matmuls from this many rows of x use the tensor-core GEMM"},
      {"quant_mma_max_rows", &O::quant_mma_max_rows, nullptr, {0, 8, 16, 32, 48, 64},
       "... up to this many rows (0: off; other M keeps the GEMV / dequantize-then-cuBLAS)"},
  };
  return table;
}

std::string allowed_text(const KernelOption& o) {
  if (o.bool_field != nullptr) return "0 or 1";
  std::string out;
  for (size_t i = 0; i < o.allowed.size(); ++i) out += (i == 0 ? "" : i + 1 == o.allowed.size() ? " or " : ", ") +
                                                       std::to_string(o.allowed[i]);
  return out;
}

std::string valid_keys() {
  std::string out;
  for (const KernelOption& o : kernel_option_table()) out += std::string(out.empty() ? "" : ", ") + o.key;
  return out;
}

}  // namespace

std::vector<std::string> apply_kernel_options(const std::string& text, CudaBackendOptions& options) {
  std::vector<std::string> keys;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    STRATA_CHECK(eq != std::string::npos && eq > 0, "--kernel-options: '", item,
                 "' is not key=value; valid keys: ", valid_keys());
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    const auto& table = kernel_option_table();
    const auto it = std::find_if(table.begin(), table.end(), [&](const KernelOption& o) { return key == o.key; });
    STRATA_CHECK(it != table.end(), "--kernel-options: unknown key '", key, "'; valid keys: ", valid_keys(),
                 " (strata generate --help lists what each does)");
    char* end = nullptr;
    const long v = std::strtol(value.c_str(), &end, 10);
    const bool is_int = !value.empty() && *end == '\0';
    const bool ok = is_int && (it->bool_field != nullptr
                                   ? (v == 0 || v == 1)
                                   : std::find(it->allowed.begin(), it->allowed.end(), v) != it->allowed.end());
    STRATA_CHECK(ok, "--kernel-options: ", key, " must be ", allowed_text(*it), ", got '", value, "'");
    if (it->bool_field != nullptr) options.*(it->bool_field) = v != 0;
    else options.*(it->int_field) = static_cast<int>(v);
    keys.push_back(key);
  }
  return keys;
}

std::string kernel_options_help() {
  const CudaBackendOptions defaults;
  std::string out;
  for (const KernelOption& o : kernel_option_table()) {
    const int d = o.bool_field != nullptr ? (defaults.*(o.bool_field) ? 1 : 0) : defaults.*(o.int_field);
    out += cat(out.empty() ? "" : "\n", "      ", o.key, " (", allowed_text(o), "; default ", d, "): ", o.help);
  }
  return out;
}

BackendSettings backend_settings(const std::string& kernel_options, const std::string& cuda_graphs, bool profile_ops) {
  BackendSettings s;
  s.kernel_keys = apply_kernel_options(kernel_options, s.cuda);
  if (const char* env = std::getenv("STRATA_CUDA_GRAPHS"); env != nullptr && *env != '\0') {
    STRATA_CHECK(std::string(env) == "0" || std::string(env) == "1", "STRATA_CUDA_GRAPHS must be 0 or 1, got '", env,
                 "'");
    s.cuda.graphs = std::string(env) == "1";
  }
  if (!cuda_graphs.empty()) {
    STRATA_CHECK(cuda_graphs == "on" || cuda_graphs == "off", "--cuda-graphs must be on or off, got '", cuda_graphs,
                 "'");
    s.cuda.graphs = cuda_graphs == "on";
  }
  const char* profile_env = std::getenv("STRATA_CUDA_PROFILE");
  s.cuda.profile = profile_ops || (profile_env != nullptr && *profile_env != '\0' && std::string(profile_env) != "0");
  return s;
}

}  // namespace strata::launcher
