// launcher/session_flags.cpp: flags and prompt parsing shared by model commands.
#include "launcher/session_flags.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "launcher/cpu_threads.h"
#include "parallel/byte_size.h"
#include "parallel/partition.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {

// Offload settings: the plan's offload section (this rank's per_rank budgets applied), then the
// --device-budget & co. flags over it. Unset when neither asks for offload.
std::optional<offload::ResidencyConfig> residency_options(const Args& args, const parallel::Plan* plan, int rank) {
  offload::ResidencyConfig r;
  bool wanted = false;
  auto tier = [](const std::string& name, const std::string& where) {
    if (name == "host") return offload::Tier::kHost;
    if (name == "disk") return offload::Tier::kDisk;
    if (name == "device" || name == "gpu") return offload::Tier::kDevice;
    STRATA_THROW(ErrorKind::kInvalidArgument, where, ": tier '", name, "' is not device, host or disk");
  };
  auto budget = [](const std::string& text, const std::string& flag, int64_t* bytes, double* percent) {
    if (auto b = parallel::parse_byte_size(text)) *bytes = *b;
    else if (auto p = parallel::parse_percent(text)) *percent = *p;
    else STRATA_THROW(ErrorKind::kInvalidArgument, "--", flag, " '", text, "' is not a size (6GiB, 512MB) or a share (40%)");
  };
  if (plan != nullptr) {
    // The same settings `plan --check` placed with (parallel::residency_config), so both agree.
    r = parallel::residency_config(*plan, rank);
    wanted = r.device_budget >= 0 || r.device_budget_percent > 0 || !r.rules.empty() ||
             r.experts_resident_per_layer >= 0;
  }
  if (args.has("device-budget")) {
    r.device_budget = -1, r.device_budget_percent = -1;
    budget(args.str("device-budget"), "device-budget", &r.device_budget, &r.device_budget_percent);
    wanted = true;
  }
  if (args.has("host-budget")) {
    double percent = -1;
    budget(args.str("host-budget"), "host-budget", &r.host_budget, &percent);
    STRATA_CHECK(percent < 0, "--host-budget takes a size (e.g. 64GiB), not a share");
  }
  if (args.has("cold-tier")) r.cold_tier = tier(args.str("cold-tier"), "--cold-tier");
  if (args.has("prefetch-depth")) r.prefetch_depth = static_cast<int>(args.integer("prefetch-depth", 2, 1, 64));
  if (args.has("offload-rules")) {  // "blk.*.ffn_*=disk,blk.0.*=device"
    const std::string text = args.str("offload-rules");
    for (size_t pos = 0; pos <= text.size();) {
      const size_t end = std::min(text.find(',', pos), text.size());
      const std::string item = text.substr(pos, end - pos);
      const size_t eq = item.find('=');
      STRATA_CHECK(eq != std::string::npos && eq > 0, "--offload-rules: '", item, "' is not GLOB=TIER (e.g. blk.*.ffn_*=disk)");
      r.rules.push_back({item.substr(0, eq), tier(item.substr(eq + 1), "--offload-rules")});
      pos = end + 1;
    }
    wanted = true;
  }
  if (args.has("disk-io")) {
    const std::string io = args.str("disk-io");
    STRATA_CHECK(io == "auto" || io == "direct" || io == "buffered", "--disk-io must be auto, direct or buffered, got '", io, "'");
    r.disk_io = io == "direct" ? offload::DiskIo::kDirect : io == "buffered" ? offload::DiskIo::kBuffered : offload::DiskIo::kAuto;
  }
  if (args.has("kv-reserve")) {
    double percent = -1;
    budget(args.str("kv-reserve"), "kv-reserve", &r.kv_reserve_bytes, &percent);
    STRATA_CHECK(percent < 0, "--kv-reserve takes a size (e.g. 2GiB), not a share");
  }
  if (args.has("offload-report")) r.report_path = args.str("offload-report");
  if (args.has("experts-resident")) {
    r.experts_resident_per_layer = args.integer("experts-resident", 1, 1, 1 << 20);
    wanted = true;
  }
  if (args.has("expert-eviction")) {
    const std::string e = args.str("expert-eviction");
    STRATA_CHECK(e == "lru" || e == "frequency", "--expert-eviction must be lru or frequency, got '", e, "'");
    r.expert_eviction = e == "lru" ? offload::ExpertEviction::kLru : offload::ExpertEviction::kFrequency;
  }
  if (args.has("offload")) wanted = true;
  if (!wanted) return std::nullopt;
  return r;
}

}  // namespace

std::vector<FlagSpec> session_flags() {
  const std::string model = "model and placement", offload = "weight offload (streams cold weights; off by default)",
                    cuda = "CUDA";
  std::vector<FlagSpec> flags = {
      {"model", true, "model path: Hugging Face directory, .gguf file or llama2.c .bin", model},
      {"mmproj", true, "llama.cpp's vision projector GGUF (mmproj-*.gguf) for a LLaVA text-model GGUF", model},
      {"plan", true, "YAML plan: run this rank's part of a multi-rank layout (under mpirun/srun)", model},
      {"device", true, "cpu (default), cuda or cuda:N", model},
      {"threads", true, "CPU threads (default: the cores free on this host, shared by its ranks)", model},
      {"cpu-repack", true, "CPU: copy block-quantized weights (Q4_0..Q8_0, the K-quants, IQ4_NL/IQ4_XS) into an "
                           "interleaved layout at load: on "
                           "(default; faster matmuls, those weights' bytes resident twice: the copy and the file's "
                           "cached pages) or off (read the mapped file as it is)", model},
      {"kv-tokens", true, "KV cache capacity in tokens (default: enough for the request)", model},
      {"kv-cache-dtype", true, "KV cache element type: auto (f32 on the CPU, bf16 on CUDA), f32, f16, bf16 or fp8 "
                               "(e4m3 with a scale per token and head: about half bf16's bytes)", model},
      {"verbose", false, "log from every rank, with debug detail", model},
      {"offload", false, "place weights with the offload manager even without a budget", offload},
      {"device-budget", true, "device memory for weights + KV reserve + ring (6GiB, 40%)", offload},
      {"host-budget", true, "pinned host memory for the host tier (beyond it: disk)", offload},
      {"cold-tier", true, "where streamed weights live: host (default) or disk", offload},
      {"prefetch-depth", true, "layers copied ahead of compute (default 2)", offload},
      {"offload-rules", true, "GLOB=TIER,... (e.g. blk.*.ffn_*=disk); first match wins", offload},
      {"disk-io", true, "disk tier reads: auto (O_DIRECT where possible), direct, buffered", offload},
      {"kv-reserve", true, "device memory to keep for the KV cache (default: from --kv-tokens)", offload},
      {"offload-report", true, "write streaming metrics (JSON) to this file at exit", offload},
      {"experts-resident", true, "MoE: routed experts per layer kept on the device, the rest fetched from host", offload},
      {"expert-eviction", true, "MoE expert cache eviction: lru (default) or frequency", offload},
      {"cuda-graphs", true, "record decode steps as graphs and replay them: on (default) or off", cuda},
      {"profile-ops", false, "print each backend op's GPU time at exit (slower; graphs off)", cuda},
      {"kernel-options", true, "kernel forms for A/B runs, key=value,...:\n" + kernel_options_help(), cuda},
  };
  for (FlagSpec& f : speculative_flags()) flags.push_back(std::move(f));
  return flags;
}

SessionOptions session_options(const Args& args, const parallel::Plan* plan, int rank) {
  SessionOptions o;
  if (plan == nullptr) o.model_path = args.required("model");
  o.mmproj_path = args.str("mmproj", plan != nullptr ? plan->model.mmproj : "");
  o.device = args.str("device", "cpu");
  o.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
  // A plan's ranks take their share later (RankRuntime knows how many share the host).
  if (plan == nullptr && o.threads == 0 && o.device == "cpu") o.threads = default_cpu_threads(1);
  o.kv_tokens = args.integer("kv-tokens", 0, 0, int64_t{1} << 32);
  if (plan != nullptr) o.kv_cache_dtype = plan->serve.kv_cache_dtype;
  if (args.has("kv-cache-dtype")) o.kv_cache_dtype = parse_kv_cache_dtype(args.str("kv-cache-dtype"), "--kv-cache-dtype");
  o.offload = residency_options(args, plan, rank);
  o.backend = backend_settings(args.str("kernel-options"), args.str("cuda-graphs"), args.has("profile-ops"));
  const std::string repack = args.str("cpu-repack", "on");
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, repack == "on" || repack == "off",
                    "--cpu-repack must be on or off, got '", repack, "'");
  o.backend.cpu_repack = repack == "on";
  o.speculative = speculative_settings(&args, plan);
  return o;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  const char* p = text.c_str();
  while (*p != '\0') {
    if (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '[' || *p == ']') {
      ++p;
      continue;
    }
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(p, &end, 10);
    STRATA_CHECK(end != p && errno == 0 && v >= 0 && v <= INT32_MAX, "token ids must be non-negative integers "
                 "separated by spaces or commas; cannot read '", std::string(p).substr(0, 16), "'");
    ids.push_back(static_cast<int32_t>(v));
    p = end;
  }
  return ids;
}

std::vector<int32_t> prompt_from_args(const Args& args, const ModelSession& session) {
  STRATA_CHECK(args.has("prompt") != args.has("prompt-ids"), "give exactly one of --prompt TEXT or --prompt-ids \"1 2 3\"");
  std::vector<int32_t> ids = args.has("prompt") ? session.tokenizer().encode(args.str("prompt"), true)
                                                 : parse_ids(args.str("prompt-ids"));
  STRATA_CHECK(!ids.empty(), "the prompt is empty");
  return ids;
}

}  // namespace strata::launcher
