// launcher/cmd_plan.cpp: `strata plan --check PLAN`: validates a plan against its model and prints,
// per rank, the coordinates, layers, shard shapes and bytes per tier. The model's shape comes from
// --model, else the plan's model.shape preset, else the checkpoint at model.path. --predict adds the
// predicted tokens/s (parallel/perf_model.h); --suggest ranks every plan for a model and a cluster.
#include <boost/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "offload/residency.h"
#include "parallel/partition.h"
#include "parallel/perf_model.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/model_presets.h"
#include "runtime/models/llava_mmproj.h"

namespace strata::launcher {
namespace {

// Per rank: the placement offload/ will use at run time and the decode rate it allows, from
// measured ceilings (--ceilings FILE written by scripts/bench-offload.sh, or --h2d-gbs & co.).
std::string describe_offload(const Args& args, const parallel::Plan& plan, const parallel::Partition& partition,
                             const ModelConfig& model) {
  offload::Ceilings ceilings;
  std::string source = "flags";
  if (args.has("ceilings")) {
    source = args.str("ceilings");
    std::ifstream in(source);
    STRATA_CHECK(in.good(), "--ceilings: cannot read '", source, "'");
    std::stringstream text;
    text << in.rdbuf();
    const boost::json::object o = boost::json::parse(text.str()).as_object();
    auto get = [&](const char* key) { return o.contains(key) ? o.at(key).to_number<double>() : 0.0; };
    ceilings = {get("device_gbs"), get("h2d_gbs"), get("disk_gbs")};
  }
  ceilings.device_gbs = args.number("device-gbs", ceilings.device_gbs, 0, 1e6);
  ceilings.link_gbs = args.number("h2d-gbs", ceilings.link_gbs, 0, 1e6);
  ceilings.disk_gbs = args.number("disk-gbs", ceilings.disk_gbs, 0, 1e6);
  const bool have_ceilings = ceilings.device_gbs > 0 || ceilings.link_gbs > 0 || ceilings.disk_gbs > 0;
  std::string out;
  for (const parallel::RankPartition& r : partition.ranks) {
    offload::ResidencyConfig config;
    config.device_budget = r.device_budget;
    config.host_budget = r.host_budget;
    config.cold_tier = plan.offload.cold_tier;
    config.prefetch_depth = plan.offload.prefetch_depth;
    for (const auto& rule : plan.offload.rules)
      config.rules.push_back({rule.match, rule.tier});
    config.experts_resident_per_layer = plan.offload.experts_resident_per_layer;
    config.expert_eviction = plan.offload.expert_eviction;
    std::vector<offload::TensorItem> items;
    for (const auto& s : r.shards)
      items.push_back({s.name, s.layer, s.bytes, offload::tensor_group(*s.slot), s.expert});
    const int64_t top_k = model.moe.enabled() ? model.moe.n_used : 0;
    offload::Placement p;
    try {
      p = offload::place(items, config, top_k);
    } catch (const Error& e) {  // parallel/'s validation owns the verdict; this line only informs
      out += cat("offload r", r.rank, ": ", e.what(), "\n");
      continue;
    }
    if (!p.streams() && !have_ceilings) continue;
    if (p.expert_slots > 0) {  // what a token's decode may fetch: its routed experts that are not resident
      const int64_t worst = r.expert_fetch_bytes;
      out += cat("offload r", r.rank, " (experts cached, ", offload::eviction_name(p.expert_eviction), "): device ",
                 offload::format_size(p.device_bytes()), " (other weights ", offload::format_size(p.resident_bytes),
                 ", ", p.expert_slots, " of ", p.experts_held, " experts x ", p.expert_layers, " layers ",
                 offload::format_size(p.expert_cache_bytes()), "); a batch-1 decode token fetches 0 (every routed "
                 "expert resident) to ", offload::format_size(worst), " (none), from ",
                 p.expert_tier == offload::Tier::kDisk ? "the checkpoint" : "pinned host memory", "\n");
      continue;
    }
    out += cat("offload r", r.rank, " (", p.strategy, "): device ", offload::format_size(p.device_bytes()),
               " (weights ", offload::format_size(p.resident_bytes), ", ring ", p.slots, " x ",
               offload::format_size(p.slot_bytes), "), streamed per token: host ", offload::format_size(p.host_bytes),
               ", disk ", offload::format_size(p.disk_bytes), "\n");
    if (!have_ceilings) {
      out += "  predicted decode: pass --ceilings bench/results/offload-ceilings.json (scripts/bench-offload.sh "
             "measures them) or --device-gbs/--h2d-gbs/--disk-gbs\n";
      continue;
    }
    const offload::DecodeEstimate one = offload::estimate_decode(p, ceilings, 1);
    const offload::DecodeEstimate many = offload::estimate_decode(p, ceilings, 64);
    char line[256];
    std::snprintf(line, sizeof line,
                  "  predicted decode: %.2f tok/s at batch 1, at most %.1f tok/s at batch 64 (%s bound; ceilings "
                  "device %.0f, h2d %.1f, disk %.2f GB/s from %s)\n",
                  one.tokens_per_s, many.tokens_per_s, one.bound.c_str(), ceilings.device_gbs, ceilings.link_gbs,
                  ceilings.disk_gbs, source.c_str());
    out += line;
  }
  return out;
}

// --predict / --suggest (parallel/perf_model.h): the hardware file, read here at the edge.
parallel::Hardware read_hardware(const Args& args) {
  STRATA_CHECK(args.has("hardware"), "--predict and --suggest need --hardware FILE (bench/hardware/*.yaml)");
  const std::string path = args.str("hardware");
  std::ifstream in(path);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "--hardware: cannot read '", path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return parallel::parse_hardware(text.str(), path);
}

std::vector<int64_t> int_list(const Args& args, const std::string& flag, std::vector<int64_t> fallback) {
  if (!args.has(flag)) return fallback;
  std::vector<int64_t> out;
  std::stringstream in(args.str(flag));
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    STRATA_CHECK(end != item.c_str() && *end == '\0' && v > 0, "--", flag, ": '", item,
                 "' is not a positive integer (give a comma list, e.g. 1,16,64)");
    out.push_back(v);
  }
  return out;
}

std::string predicted_line(const parallel::Prediction& p, int64_t batch) {
  const parallel::StepTime& d = p.decode;
  char line[320];
  std::snprintf(line, sizeof line,
                "  batch %4lld: %9.1f tok/s decode (%.2f ms/step, %s-bound: compute %.2f, all-reduce %.2f of which "
                "%.0f%% hidden, p2p %.2f, bubble %.2f, streaming %.2f ms), prefill %.0f tok/s, %s per device%s\n",
                static_cast<long long>(batch), p.decode_tokens_per_s, d.total_s * 1e3, d.bound.c_str(),
                d.compute_s * 1e3, d.allreduce_s * 1e3, 100 * d.hidden_fraction(), d.p2p_s * 1e3, d.bubble_s * 1e3,
                d.stream_s * 1e3, p.prefill_tokens_per_s, offload::format_size(p.device_bytes_per_rank).c_str(),
                p.fits ? "" : " (does NOT fit)");
  return line;
}

// `plan --suggest --model M --hardware H [--gpus N,...]`: every (tp, pp, dp) validate_plan accepts,
// ranked by the predicted throughput or latency, per GPU count.
int suggest(const Args& args) {
  const parallel::Hardware hw = read_hardware(args);
  const std::string model = args.required("model");
  const bool is_path = std::filesystem::exists(model);
  const ModelConfig config = is_path ? open_checkpoint(model)->config() : model_preset(model);
  const std::string objective = args.str("objective", "throughput");
  STRATA_CHECK(objective == "throughput" || objective == "latency", "--objective must be throughput or latency, got '",
               objective, "'");
  const DType dtype = args.has("dtype") ? dtype_from_name(args.str("dtype")) : DType::kBF16;
  const std::vector<int64_t> gpus = int_list(args, "gpus", {hw.world()});
  const int64_t batch = args.integer("batch", 64, 1, 1 << 20);
  const parallel::Workload work{batch, args.integer("prompt-len", 512, 1, 1 << 20), args.integer("output-len", 128, 2, 1 << 20)};
  const int64_t top = args.integer("top", gpus.size() > 1 ? 1 : 5, 1, 1000);
  std::printf("suggested plans for %s (%.2fB parameters, %s) on %s, %s objective, batch %lld, prompt %lld, "
              "output %lld (predictions from parallel/perf_model.h; see docs/performance-model.md for their error)\n",
              model.c_str(), static_cast<double>(config.parameter_count()) / 1e9, dtype_name(dtype), hw.source.c_str(),
              objective.c_str(), static_cast<long long>(work.batch), static_cast<long long>(work.prompt_len),
              static_cast<long long>(work.output_len));
  for (const int64_t n : gpus) {
    const parallel::SuggestResult r = parallel::suggest_plans(
        config, hw, static_cast<int>(n), work,
        objective == "latency" ? parallel::Objective::kLatency : parallel::Objective::kThroughput, dtype);
    std::printf("%lld GPUs (%d node%s):\n", static_cast<long long>(n),
                static_cast<int>((n + hw.devices_per_node - 1) / hw.devices_per_node), n > hw.devices_per_node ? "s" : "");
    if (r.ranked.empty()) std::printf("  no plan fits; rejected:\n");
    for (size_t i = 0; i < r.ranked.size() && static_cast<int64_t>(i) < top; ++i) {
      const parallel::Suggestion& s = r.ranked[i];
      std::printf("  %zu. %-16s %10.1f tok/s, %7.2f ms/token, TTFT %.0f ms, %s per device: %s\n", i + 1,
                  s.shape.str().c_str(), s.prediction.decode_tokens_per_s, s.prediction.decode.total_s * 1e3,
                  s.prediction.ttft_s * 1e3, offload::format_size(s.prediction.device_bytes_per_rank).c_str(),
                  s.reason.c_str());
    }
    if (r.ranked.empty() || args.has("verbose"))
      for (const std::string& why : r.rejected) std::printf("    rejected %s\n", why.c_str());
  }
  return 0;
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  const Args args("plan", {{"check", true, "the YAML plan to validate"},
                           {"model", true, "checkpoint whose shape the plan is checked against"},
                           {"world", true, "job size to check against (default: the plan's data x pipeline x tensor)"},
                           {"ceilings", true, "JSON of measured ceilings (device_gbs, h2d_gbs, disk_gbs) for the "
                                              "predicted decode rate of offloaded ranks"},
                           {"device-gbs", true, "device memory read rate, GB/s (overrides --ceilings)"},
                           {"h2d-gbs", true, "pinned host-to-device copy rate, GB/s (overrides --ceilings)"},
                           {"disk-gbs", true, "sequential read rate of the checkpoint's disk, GB/s"},
                           {"predict", false, "with --check: predicted tokens/s of the plan (needs --hardware)"},
                           {"suggest", false, "rank every plan for --model (path or preset) on --hardware"},
                           {"hardware", true, "hardware file for --predict/--suggest (bench/hardware/*.yaml)"},
                           {"gpus", true, "--suggest: GPU counts, e.g. 8,64,1024 (default: the hardware file's)"},
                           {"batch", true, "--predict: batches (default 1,16,64); --suggest: one batch (default 64)"},
                           {"prompt-len", true, "--predict/--suggest: prompt tokens per sequence"},
                           {"output-len", true, "--predict/--suggest: generated tokens per sequence"},
                           {"objective", true, "--suggest: throughput (default) or latency"},
                           {"dtype", true, "--suggest: weight dtype (default bf16)"},
                           {"top", true, "--suggest: plans shown per GPU count"},
                           {"verbose", false, "--suggest: also list rejected plans and why"}},
                  argc, argv, 2, true);
  if (args.has("suggest")) return suggest(args);
  std::string path = args.str("check");
  if (path.empty() && !args.positionals().empty()) path = args.positionals()[0];
  STRATA_CHECK(!path.empty(), "give the plan to check: strata plan --check configs/x.yaml");
  const parallel::ParsedPlan parsed = parallel::parse_plan_file(path);
  if (parallel::has_errors(parsed.diagnostics)) {
    std::fprintf(stderr, "%s\n", parallel::join_diagnostics(parsed.diagnostics).c_str());
    return 1;
  }
  // --model replaces the plan's model (path and shape) for the whole check, and the report says so.
  parallel::Plan plan = parsed.plan;
  if (args.has("model")) {
    plan.model.path = args.str("model");
    plan.model.shape.clear();
  }
  ModelConfig config;
  std::string source;
  parallel::PartitionOptions options;
  options.world_size = static_cast<int>(args.integer("world", plan.world_size(), 1, 1 << 20));
  if (!args.has("model") && !plan.model.shape.empty()) {
    source = "shape " + plan.model.shape;
    config = model_preset(plan.model.shape);
  } else {
    STRATA_CHECK_KIND(ErrorKind::kConfig, args.has("model") || std::filesystem::exists(plan.model.path), path,
                      ": model.path '", plan.model.path, "' does not exist; pass --model PATH or add model.shape to "
                      "check the plan without the weights");
    source = plan.model.path;
    const std::unique_ptr<Checkpoint> checkpoint = open_checkpoint(source);
    config = checkpoint->config();
    // Without model.dtype the ranks hold the checkpoint's own weights: size and check them in its dtype.
    options.default_dtype = parallel::checkpoint_weight_dtype(*checkpoint, options.default_dtype);
    options.default_dtype_source = cat("not in the plan: the checkpoint's, ", checkpoint->format());
    source += cat(" (", checkpoint->format(), ")");
    if (!plan.model.mmproj.empty()) {  // the vision side must fit this language model
      const LlavaConfig vision = read_mmproj_config(plan.model.mmproj, config.hidden, -1, plan.model.path);
      source += cat(" with mmproj ", plan.model.mmproj, " (CLIP tower of ", vision.feature_layer, " layers, ",
                    vision.features_per_image(), " image tokens",
                    vision.anyres() ? cat(" per tile; LLaVA-NeXT tiling over ", vision.grid_pinpoints.size(),
                                          " grid resolutions")
                                    : std::string(),
                    ")");
    }
  }
  const std::vector<parallel::Diagnostic> diagnostics = parallel::validate_plan(plan, config, options);
  std::string warnings;
  for (const auto& d : parsed.diagnostics) warnings += d.str() + "\n";
  for (const auto& d : diagnostics) warnings += d.str() + "\n";
  if (parallel::has_errors(diagnostics)) {
    std::fprintf(stderr, "%s", warnings.c_str());
    return 1;
  }
  const parallel::Partition partition = parallel::make_partition(plan, config, options);
  std::printf("plan %s checked against %s\n%s", path.c_str(), source.c_str(),
              parallel::describe(plan, config, partition).c_str());
  std::printf("%s", describe_offload(args, plan, partition, config).c_str());
  if (args.has("predict")) {
    const parallel::Hardware hw = read_hardware(args);
    const parallel::PlanShape shape = parallel::plan_shape(plan, partition);
    const int64_t prompt = args.integer("prompt-len", 128, 1, 1 << 20), output = args.integer("output-len", 128, 2, 1 << 20);
    std::printf("predicted on %s (%s, prompt %lld, output %lld; parallel/perf_model.h, error: docs/performance-model.md):\n",
                hw.source.c_str(), shape.str().c_str(), static_cast<long long>(prompt), static_cast<long long>(output));
    for (const int64_t b : int_list(args, "batch", {1, 16, 64}))
      std::printf("%s", predicted_line(parallel::predict(config, shape, hw, {b, prompt, output}), b).c_str());
  }
  if (!warnings.empty()) std::fprintf(stderr, "%s", warnings.c_str());
  return 0;
}

}  // namespace strata::launcher
