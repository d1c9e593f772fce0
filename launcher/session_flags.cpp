// launcher/session_flags.cpp: flags and prompt parsing shared by model commands.
#include "launcher/session_flags.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "comm/bootstrap.h"
#include "parallel/byte_size.h"
#include "parallel/partition.h"
#include "parallel/plan_parser.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {

// Offload settings: the plan's offload section (this rank's per_rank budgets applied), then the
// --device-budget & co. flags over it. Unset when neither asks for offload.
std::optional<offload::ResidencyConfig> residency_options(const Args& args) {
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
  if (args.has("plan")) {
    // The same settings `plan --check` placed with (parallel::residency_config), so both agree.
    const parallel::Plan plan = parallel::load_plan(args.str("plan"));
    r = parallel::residency_config(plan, comm::detect_launch().world_rank);
    wanted = r.device_budget >= 0 || r.device_budget_percent > 0 || !r.rules.empty();
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
  if (args.has("offload")) wanted = true;
  if (!wanted) return std::nullopt;
  return r;
}

}  // namespace

std::vector<FlagSpec> session_flags() {
  return {
      {"model", true, "model path: Hugging Face directory, .gguf file or llama2.c .bin"},
      {"plan", true, "YAML plan: run this rank's part of a multi-rank layout (under mpirun/srun)"},
      {"device", true, "cpu (default), cuda or cuda:N"},
      {"threads", true, "CPU threads (default: all cores)"},
      {"kv-tokens", true, "KV cache capacity in tokens (default: enough for the request)"},
      {"verbose", false, "log from every rank, with debug detail"},
      {"offload", false, "place weights with the offload manager even without a budget"},
      {"device-budget", true, "weight offload: device memory for weights + KV reserve + ring (6GiB, 40%)"},
      {"host-budget", true, "weight offload: pinned host memory for the host tier (beyond it: disk)"},
      {"cold-tier", true, "weight offload: where streamed weights live: host (default) or disk"},
      {"prefetch-depth", true, "weight offload: layers copied ahead of compute (default 2)"},
      {"offload-rules", true, "weight offload: GLOB=TIER,... (e.g. blk.*.ffn_*=disk); first match wins"},
      {"disk-io", true, "weight offload: disk tier reads: auto (O_DIRECT where possible), direct, buffered"},
      {"kv-reserve", true, "weight offload: device memory to keep for the KV cache (default: from --kv-tokens)"},
      {"offload-report", true, "weight offload: write streaming metrics (JSON) to this file at exit"},
      {"cuda-graphs", true, "CUDA: record decode steps as graphs and replay them: on (default) or off"},
      {"profile-ops", false, "CUDA: print each backend op's GPU time at exit (slower; graphs off)"},
      {"kernel-options", true, "CUDA kernel forms for A/B runs, key=value,...:\n" + kernel_options_help()},
      {"help", false, "show this help"},
  };
}

SessionOptions session_options(const Args& args) {
  SessionOptions o;
  if (!args.has("plan")) o.model_path = args.required("model");
  o.device = args.str("device", "cpu");
  o.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
  o.kv_tokens = args.integer("kv-tokens", 0, 0, int64_t{1} << 32);
  o.offload = residency_options(args);
  o.backend = backend_settings(args.str("kernel-options"), args.str("cuda-graphs"), args.has("profile-ops"));
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
