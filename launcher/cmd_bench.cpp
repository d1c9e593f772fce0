// launcher/cmd_bench.cpp: `strata bench memory` (the host's copy and read bandwidth, STREAM-like) and
// `strata bench decode` (decode tokens/s and weight bytes/s at a batch size, beside the measured
// bandwidth, and where a decode step's time went, launcher/step_breakdown.h; with --plan, one rank
// of a multi-rank run). Both print one JSON object so scripts/bench-*.sh
// and `bench scaling` (cmd_bench_scaling.cpp) can keep the result.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "launcher/rank_runtime.h"
#include "launcher/session_flags.h"
#include "launcher/step_breakdown.h"
#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Bandwidth {
  double copy_gbs = 0;  // bytes read + written per second (STREAM's convention)
  double read_gbs = 0;  // bytes read per second (what weight streaming does)
};

// Best of `reps` passes over buffers far larger than the last-level cache, on every thread.
Bandwidth measure_bandwidth(int64_t bytes, int reps) {
  const int64_t n = bytes / 8;
  std::vector<double> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[static_cast<size_t>(i)] = 1.0 + static_cast<double>(i % 7), b[static_cast<size_t>(i)] = 0;
  Bandwidth best;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) b[static_cast<size_t>(i)] = a[static_cast<size_t>(i)];
    best.copy_gbs = std::max(best.copy_gbs, 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
    t0 = std::chrono::steady_clock::now();
    double sum = 0;
    // Eight independent accumulators so the adds keep up with memory (one chain would be
    // latency-bound and measure the FPU, not the bus).
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (int64_t i = 0; i < n / 8; ++i) {
      const double* p = b.data() + i * 8;
      sum += ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    }
    const double dt = seconds_since(t0);
    if (sum == -1) std::printf(" ");  // keeps the read from being optimised away
    best.read_gbs = std::max(best.read_gbs, static_cast<double>(bytes) / dt / 1e9);
  }
  return best;
}

// A GPU backend's ceiling: the device-to-device copy rate through the backend's own copy (bytes read +
// written, as above), best of `reps`. The read-only rate is not measured there (read_gbs stays 0). A device
// without room for the two buffers next to the model reports 0 rather than failing the benchmark.
Bandwidth measure_device_bandwidth(Backend& backend, int64_t bytes, int reps) {
  Bandwidth best;
  try {
    const int64_t n = bytes / 4;
    Tensor a = backend.alloc(Shape{n}, DType::kF32), b = backend.alloc(Shape{n}, DType::kF32);
    backend.copy(a, b);  // first touch out of the timing
    backend.synchronize();
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      backend.copy(a, b);
      backend.synchronize();
      best.copy_gbs = std::max(best.copy_gbs, 2.0 * static_cast<double>(n * 4) / seconds_since(t0) / 1e9);
    }
  } catch (const Error& e) {
    LOG_WARN("bench decode: the device copy bandwidth was not measured: ", e.what());
  }
  return best;
}

int bench_memory(int argc, char** argv) {
  const Args args("bench memory", {{"mib", true, "buffer size in MiB (default 1024)"},
                                   {"reps", true, "passes, best kept (default 5)"}},
                  argc, argv, 3);
  const int64_t mib = args.integer("mib", 1024, 64, 1 << 20);
  const Bandwidth bw = measure_bandwidth(mib << 20, static_cast<int>(args.integer("reps", 5, 1, 100)));
  std::printf("{\"threads\": %d, \"buffer_mib\": %lld, \"copy_gbs\": %.2f, \"read_gbs\": %.2f}\n", omp_get_max_threads(),
              static_cast<long long>(mib), bw.copy_gbs, bw.read_gbs);
  return 0;
}

// Percentile `q` (0..1) of `v` by nearest rank; 0 for an empty list.
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// With --plan this is one rank of a multi-rank run (the scaling sweep launches it under mpirun): the
// batch is split over the replicas as `generate` splits it, only world rank 0 prints, and the host
// bandwidth is not measured (N ranks measuring at once would measure each other).
int run_decode(const Args& args, const SessionOptions& options, RankRuntime* rank) {
  const int64_t batch = args.integer("batch", 1, 1, 4096), prompt_len = args.integer("prompt-len", 16, 1, 1 << 20);
  const int64_t n = args.integer("n", 64, 2, 1 << 20);
  const int64_t bandwidth_bytes = args.integer("mib", 1024, 64, 1 << 20) << 20;
  const bool on_device = options.device != "cpu";  // the ceiling is the device's memory, measured once it is open
  Bandwidth bw = rank == nullptr && !on_device ? measure_bandwidth(bandwidth_bytes, 5) : Bandwidth{};
  const std::unique_ptr<ModelSession> owned = open_session(options, rank);
  ModelSession& session = *owned;
  if (rank == nullptr && on_device) bw = measure_device_bandwidth(session.backend(), bandwidth_bytes, 5);
  GenerationRequest r;
  // --repeat-period P: the prompt cycles through P tokens (repetitive text, where prompt-lookup
  // speculation finds its drafts); 0: no repetition.
  const int64_t period = args.integer("repeat-period", 0, 0, 1 << 20);
  for (int64_t i = 0; i < prompt_len; ++i) {
    const int64_t k = period > 0 ? i % period : i;
    r.prompt.push_back(static_cast<int32_t>(1 + (k * 7919) % (session.config().vocab_size - 1)));
  }
  r.max_new_tokens = n;
  const int replicas = rank != nullptr ? rank->replicas() : 1, replica = rank != nullptr ? rank->replica_index() : 0;
  const int64_t local = batch / replicas + (replica < batch % replicas ? 1 : 0);
  session.prepare(std::max<int64_t>(1, local) * (prompt_len + n + 16));
  // Arrival times of sequence 0's tokens: time to first token and inter-token latency percentiles.
  std::vector<double> arrivals;
  arrivals.reserve(static_cast<size_t>(n));
  // One untimed pass over the same shapes first: lazy kernel loading, cuBLAS heuristics, pool growth and
  // the recording of each decode graph (one per batch bucket and block-table width, several ms each; the
  // width grows as the context does, so the pass runs the full length) belong to start-up, not to the
  // step times. Its prompt differs so the prefix cache cannot serve the timed prefill.
  GenerationRequest warm = r;
  for (int32_t& id : warm.prompt) id = static_cast<int32_t>(1 + (id + 1) % (session.config().vocab_size - 1));
  // Each sequence its own prompt (a rotation of the ids), so a mixture-of-experts batch routes its tokens
  // apart as real traffic does instead of sending every sequence to the same experts.
  auto batch_of = [&](const GenerationRequest& one) {
    std::vector<GenerationRequest> reqs(static_cast<size_t>(local), one);
    const auto V = static_cast<int32_t>(session.config().vocab_size - 1);
    for (size_t i = 1; i < reqs.size(); ++i)
      for (int32_t& id : reqs[i].prompt) id = 1 + static_cast<int32_t>((id + static_cast<int64_t>(i) * 104729) % V);
    return reqs;
  };
  session.generator().generate(batch_of(warm), nullptr);
  const GenerationStats before = session.generator().stats();
  // Sequence 0 gets one token per step, so its callback sees every step's counters.
  const StepCounters start = read_counters(session);
  const LlamaModel::Timings timings_before = session.model().timings();
  // Mixture-of-experts models: every stage's routed tokens, summed on the replica's driver (world rank 0
  // prints); every rank takes part in the gather, before and after the timed run.
  const bool moe = session.config().moe.n_experts > 0;
  const auto replica_expert_tokens = [&] {
    return moe ? gather_replica_expert_tokens(session.model(), session.link()) : std::vector<int64_t>{};
  };
  const std::vector<int64_t> experts_before = replica_expert_tokens();
  int64_t expert_bytes_at_first_token = 0;  // after the prefill step: what follows is decode
  const ExpertCacheStats cache_before = session.model().expert_cache_stats();
  int64_t streamed_at_first_token = 0;  // expert cache bytes fetched up to the end of the prefill
  StepBreakdown breakdown(start);
  const auto t0 = std::chrono::steady_clock::now();
  session.generator().generate(batch_of(r), [&](size_t seq, int32_t) {
    if (seq != 0) return;
    if (arrivals.empty()) {
      expert_bytes_at_first_token = session.model().expert_load().expert_bytes;
      streamed_at_first_token = session.model().expert_cache_stats().bytes_streamed;
    }
    arrivals.push_back(seconds_since(t0));
    breakdown.observe(read_counters(session));
  });
  const std::vector<int64_t> experts_after = replica_expert_tokens();
  if (rank != nullptr && !rank->prints()) return 0;
  GenerationStats s = session.generator().stats();
  s.prompt_tokens -= before.prompt_tokens;
  s.prefill_seconds -= before.prefill_seconds;
  s.decode_seconds -= before.decode_seconds;
  s.forward_seconds -= before.forward_seconds;
  s.sample_seconds -= before.sample_seconds;
  s.generated_tokens -= before.generated_tokens;
  s.decode_steps -= before.decode_steps;
  s.spec_verify_steps -= before.spec_verify_steps;
  s.spec_draft_tokens -= before.spec_draft_tokens;
  s.spec_accepted_tokens -= before.spec_accepted_tokens;
  s.spec_emitted_tokens -= before.spec_emitted_tokens;
  std::vector<double> gaps;
  for (size_t i = 1; i < arrivals.size(); ++i) gaps.push_back((arrivals[i] - arrivals[i - 1]) * 1e3);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  // Bytes each decode step must stream: every layer weight and the LM head (the embedding is a
  // lookup of a few rows). With a plan: this rank's shard (stage 0 of replica 0).
  const Checkpoint& ck = session.checkpoint();
  const bool has_head = rank == nullptr || rank->part().shard.last_stage;
  const int64_t head_bytes = !has_head ? 0
                             : static_cast<int64_t>(ck.has("output.weight") ? ck.entry("output.weight").nbytes
                                                                             : ck.entry("token_embd.weight").nbytes) /
                                   (rank != nullptr ? rank->plan().parallel.tensor : 1);
  const int64_t decode_tokens = n - 1;  // per sequence: the first token comes from the prefill step
  // Mixture-of-experts: a step reads only the experts its tokens were routed to (each once per layer),
  // so the bytes actually read are the dense weights plus the decode steps' measured expert bytes.
  const int64_t expert_bytes_per_step =
      (session.model().expert_load().expert_bytes - expert_bytes_at_first_token) / std::max<int64_t>(1, decode_tokens);
  const int64_t step_bytes = session.weight_bytes() - session.expert_weight_bytes() + head_bytes +
                             (session.expert_weight_bytes() > 0 ? expert_bytes_per_step : 0);
  // Per decode token (one step each without speculation; a verified step emits several).
  const double step_s = s.decode_seconds / static_cast<double>(decode_tokens);
  const double weight_gbs = static_cast<double>(step_bytes) / step_s / 1e9;
  auto share = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  StepCounters totals = read_counters(session);  // the timed run, prefill included (not the warm-up)
  totals.comm.ops -= start.comm.ops;
  totals.comm.bytes -= start.comm.bytes;
  totals.comm.busy_seconds -= start.comm.busy_seconds;
  totals.comm.blocked_seconds -= start.comm.blocked_seconds;
  totals.stream_bytes -= start.stream_bytes;
  totals.stream_wait_s -= start.stream_wait_s;
  totals.stream_busy_s -= start.stream_busy_s;
  const std::string parts = boost::json::serialize(parts_json(breakdown.parts()));
  const std::string memory = boost::json::serialize(memory_json(session));
  // Speculative decoding: how many drafts the target kept, and tokens per decode step of a sequence
  // (ms_per_step above is per token; a step that verifies drafts emits several).
  boost::json::object spec;
  spec["method"] = options.speculative.method;
  spec["tokens"] = options.speculative.on() ? options.speculative.tokens : 0;
  spec["repeat_period"] = period;
  spec["decode_steps"] = s.decode_steps;
  spec["draft_tokens"] = s.spec_draft_tokens;
  spec["accepted_tokens"] = s.spec_accepted_tokens;
  spec["acceptance_rate"] = share(static_cast<double>(s.spec_accepted_tokens), static_cast<double>(s.spec_draft_tokens));
  spec["tokens_per_step"] = share(static_cast<double>(decode_tokens), static_cast<double>(s.decode_steps));
  spec["ms_per_decode_step"] = share(s.decode_seconds * 1e3, static_cast<double>(s.decode_steps));
  const std::string speculation = boost::json::serialize(spec);
  // Mixture-of-experts models: tokens routed to each expert during the run over every stage (per-expert load).
  boost::json::array expert_tokens;
  for (size_t e = 0; e < experts_after.size(); ++e)
    expert_tokens.push_back(experts_after[e] - (e < experts_before.size() ? experts_before[e] : 0));
  // Offloaded experts: the cache's hits and misses over the timed run and the bytes its decode steps
  // fetched per step and per token; per layer and per expert in the offload report (--offload-report).
  boost::json::value expert_cache = nullptr;
  if (const ExpertCacheStats c = session.model().expert_cache_stats(); c.enabled()) {
    int64_t hits = 0, misses = 0;
    for (size_t i = 0; i < c.hits.size(); ++i)
      hits += c.hits[i] - cache_before.hits[i], misses += c.misses[i] - cache_before.misses[i];
    boost::json::array layer_rates;
    for (int64_t l = 0; l < c.layers; ++l) {
      int64_t lh = 0, lm = 0;
      for (int64_t e = 0; e < c.experts; ++e) {
        const auto i = static_cast<size_t>(l * c.experts + e);
        lh += c.hits[i] - cache_before.hits[i], lm += c.misses[i] - cache_before.misses[i];
      }
      layer_rates.push_back(share(static_cast<double>(lh), static_cast<double>(lh + lm)));
    }
    boost::json::array expert_rates;  // this rank's experts, summed over layers
    for (int64_t e = 0; e < c.experts; ++e) {
      int64_t eh = 0, em = 0;
      for (int64_t l = 0; l < c.layers; ++l) {
        const auto i = static_cast<size_t>(l * c.experts + e);
        eh += c.hits[i] - cache_before.hits[i], em += c.misses[i] - cache_before.misses[i];
      }
      expert_rates.push_back(share(static_cast<double>(eh), static_cast<double>(eh + em)));
    }
    const double per_step = static_cast<double>(c.bytes_streamed - streamed_at_first_token) / static_cast<double>(decode_tokens);
    expert_cache = boost::json::object{
        {"resident_per_layer", c.resident_per_layer}, {"experts_per_layer", c.experts},
        {"hits", hits}, {"misses", misses}, {"hit_rate", share(static_cast<double>(hits), static_cast<double>(hits + misses))},
        {"layer_hit_rate", layer_rates}, {"expert_first", c.expert_first}, {"expert_hit_rate", expert_rates},
        {"bytes_streamed", c.bytes_streamed - cache_before.bytes_streamed},
        {"bytes_streamed_per_step", per_step}, {"bytes_streamed_per_token", per_step / static_cast<double>(batch)},
        {"stream_gbs", per_step / step_s / 1e9}};
  }
  // Device time of the recorded decode steps (forward and LM head, not sampling): against ms_per_step it
  // shows the host's share of a step.
  const LlamaModel::Timings& t = session.model().timings();
  const int64_t replays = t.graph_replays - timings_before.graph_replays;
  const double graph_s = t.graph_device_seconds - timings_before.graph_device_seconds;
  std::printf("{\"model\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"batch\": %lld, \"prompt_len\": %lld, "
              "\"decode_tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"weight_bytes_per_step\": %lld, "
              "\"weight_gbs\": %.2f, \"copy_gbs\": %.2f, \"read_gbs\": %.2f, \"of_copy\": %.3f, \"of_read\": %.3f, "
              "\"prefill_tokens_per_s\": %.1f, \"output_len\": %lld, \"world\": %d, \"plan\": \"%s\", "
              "\"ttft_ms\": %.3f, \"itl_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
              "\"max_rss_mib\": %.1f, \"prefill_s\": %.4f, \"decode_s\": %.4f, "
              "\"tp_comm_wait_s\": %.4f, \"tp_all_reduces\": %lld, \"forward_s\": %.4f, \"sample_s\": %.4f, "
              "\"comm_ops\": %lld, \"comm_bytes\": %lld, \"comm_busy_s\": %.4f, \"comm_blocked_s\": %.4f, "
              "\"stream_bytes\": %lld, \"stream_wait_s\": %.4f, \"stream_busy_s\": %.4f, "
              "\"graph_replays\": %lld, \"graph_gpu_ms\": %.3f, \"expert_tokens\": %s, "
              "\"expert_bytes_per_step\": %lld, \"expert_bytes_held\": %lld, \"breakdown\": %s, "
              "\"memory\": %s, \"speculative\": %s, \"expert_cache\": %s}\n",
              ck.path().c_str(), dtype_name(ck.entry("blk.0.attn_q.weight").dtype), omp_get_max_threads(),
              static_cast<long long>(batch), static_cast<long long>(prompt_len),
              static_cast<double>(batch) / step_s, step_s * 1e3, static_cast<long long>(step_bytes), weight_gbs,
              bw.copy_gbs, bw.read_gbs, share(weight_gbs, bw.copy_gbs), share(weight_gbs, bw.read_gbs),
              s.prefill_seconds > 0 ? static_cast<double>(s.prompt_tokens) / s.prefill_seconds : 0.0,
              static_cast<long long>(n), rank != nullptr ? rank->world_size() : 1,
              rank != nullptr ? rank->plan().source.c_str() : "", arrivals.empty() ? 0.0 : arrivals[0] * 1e3,
              percentile(gaps, 0.5), percentile(gaps, 0.9), percentile(gaps, 0.99),
              static_cast<double>(usage.ru_maxrss) / 1024.0, s.prefill_seconds, s.decode_seconds,
              session.model().timings().comm_wait_seconds - timings_before.comm_wait_seconds,
              static_cast<long long>(session.model().timings().all_reduces - timings_before.all_reduces),
              s.forward_seconds, s.sample_seconds, static_cast<long long>(totals.comm.ops),
              static_cast<long long>(totals.comm.bytes), totals.comm.busy_seconds, totals.comm.blocked_seconds,
              static_cast<long long>(totals.stream_bytes), totals.stream_wait_s, totals.stream_busy_s,
              static_cast<long long>(replays), replays > 0 ? graph_s / static_cast<double>(replays) * 1e3 : 0.0,
              boost::json::serialize(expert_tokens).c_str(), static_cast<long long>(expert_bytes_per_step),
              static_cast<long long>(session.expert_weight_bytes()), parts.c_str(), memory.c_str(), speculation.c_str(),
              boost::json::serialize(expert_cache).c_str());
  std::fflush(stdout);
  return 0;
}

int bench_decode(int argc, char** argv) {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {{"batch", true, "sequences decoded together (default 1)"},
                             {"prompt-len", true, "prompt tokens per sequence (default 16)"},
                             {"n", true, "tokens to generate per sequence (default 64)"},
                             {"repeat-period", true,
                              "the prompt cycles through this many tokens: repetitive text for --speculative ngram "
                              "(default 0: no repetition)"},
                             {"mib", true, "buffer for the bandwidth measurement (default 1024; host memory on the CPU, device memory on a GPU; not with --plan)"},
                             {"skip-all-reduces", false,
                              "timing only, with --plan: skip the TP all-reduces (outputs are wrong; bench scaling "
                              "measures exposed communication this way)"}});
  const Args args("bench decode", flags, argc, argv, 3);
  return run_with_plan(args, [&](const SessionOptions& o, RankRuntime* rank) { return run_decode(args, o, rank); });
}

}  // namespace

// `bench scaling` (launcher/cmd_bench_scaling.cpp); declared here, not in commands.h, because it is
// reached only through `bench`.
int cmd_bench_scaling(int argc, char** argv);
int cmd_bench_disk(int argc, char** argv);  // launcher/cmd_bench_disk.cpp

int cmd_bench(int argc, char** argv) {
  struct Bench {
    const char* name;
    int (*run)(int, char**);
    const char* help;
  };
  const Bench benches[] = {
      {"memory", bench_memory, "host memory copy bandwidth (the ceiling of CPU decode)"},
      {"decode", bench_decode, "decode rate of a model against the bandwidth ceiling"},
      {"serve", cmd_bench_serve, "HTTP load against a running `strata serve`: throughput and latencies"},
      {"scaling", cmd_bench_scaling, "sweeps of plans under mpirun/srun with predicted and measured rates"},
      {"disk", cmd_bench_disk, "the disk tier's read rate with several reads in flight"},
  };
  std::string usage = "usage: strata bench <benchmark> [flags]\n\n";
  for (const Bench& b : benches) usage += cat("  ", b.name, std::string(9 - std::strlen(b.name), ' '), b.help, "\n");
  usage += "\n`strata bench <benchmark> --help` lists its flags.\n";
  const std::string what = argc > 2 ? argv[2] : "";
  if (what == "-h" || what == "--help" || what == "help") throw HelpRequested{usage};
  std::vector<std::string> names;
  for (const Bench& b : benches) {
    if (what == b.name) return b.run(argc, argv);
    names.push_back(b.name);
  }
  const std::string best = nearest(what, names);
  STRATA_THROW(ErrorKind::kInvalidArgument, what.empty() ? "which benchmark?" : cat("unknown benchmark '", what, "'"),
               best.empty() || what.empty() ? "" : cat(" (did you mean '", best, "'?)"), "\n", usage);
}

}  // namespace strata::launcher
