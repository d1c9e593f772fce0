// launcher/cmd_bench_scaling.cpp: `strata bench scaling --sweep FILE --out DIR`: runs a sweep (plans x
// batches x prompt/output lengths, bench/scaling/*.yaml), one `bench decode --plan` per point under
// mpirun/srun, and writes report.json (measured, predicted by parallel/perf_model.h, their error,
// strong and weak scaling) and PNG plots. Not a benchmark itself: every number comes from the child.
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "launcher/args.h"
#include "launcher/step_breakdown.h"
#include "parallel/partition.h"
#include "parallel/perf_model.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"

namespace strata::launcher {
namespace {
namespace fs = std::filesystem;
namespace json = boost::json;

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), what, ": cannot read '", path, "'");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string quote(const std::string& s) { return "'" + s + "'"; }  // paths from our own files: no quotes inside

struct Child {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command under coreutils `timeout`, so a hung rank ends the point, not the sweep.
Child run_child(const std::string& command, int timeout_s) {
  Child c;
  const std::string full = cat("timeout -k 5 ", timeout_s, " ", command, " 2>&1");
  FILE* pipe = popen(full.c_str(), "r");
  STRATA_CHECK_KIND(ErrorKind::kIo, pipe != nullptr, "cannot start '", command, "'");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) c.output.append(buf, n);
  const int status = pclose(pipe);
  c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return c;
}

// The last line of `output` that parses as a JSON object (ranks may log before it).
std::optional<json::object> last_json(const std::string& output) {
  std::istringstream in(output);
  std::optional<json::object> found;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    if (!ec && v.is_object()) found = v.as_object();
  }
  return found;
}

std::string tail(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(s.size() - n); }

// Open MPI's mpirun refuses to start as root unless told that it is meant; its long refusal, cut to a
// point's failure line, said nothing useful, and every point failed the same way. Checked once, up front.
constexpr const char* kRootFix = "set OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 in the environment "
                                 "(or pass --launcher-args --allow-run-as-root, or run as another user)";
bool mpirun_refuses_root(const std::string& launcher_args) {
  if (geteuid() != 0 || launcher_args.find("--allow-run-as-root") != std::string::npos) return false;
  auto set = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == "1";
  };
  if (set("OMPI_ALLOW_RUN_AS_ROOT") && set("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")) return false;
  return run_child("mpirun --version", 30).output.find("Open MPI") != std::string::npos;  // MPICH runs as root
}
double num(const json::object& o, const char* key) { return o.contains(key) ? o.at(key).to_number<double>() : 0.0; }

struct Point {
  const parallel::SweepPlan* plan = nullptr;
  std::string plan_file;
  int world = 1;
  int64_t batch = 1, prompt_len = 16, output_len = 16;
  std::string kind = "sweep";  // sweep | weak
  std::string status = "not run", message;
  json::object measured;
  std::optional<parallel::Prediction> predicted;
};

std::string plan_yaml(const parallel::SweepPlan& p, const std::string& model) {
  std::string s = cat("# written by strata bench scaling\nmodel:\n  path: ", model, "\nparallel:\n  tensor: ", p.tp,
                      "\n  pipeline: ", p.pp, "\n  data: ", p.dp, "\n");
  if (p.micro_batches > 0) s += cat("  micro_batches: ", p.micro_batches, "\n");
  if (p.interleaved) s += "  schedule: interleaved\n";
  return s + cat("comm:\n  overlap_chunks: ", p.overlap_chunks, "\n  overlap_min_tokens: ", p.overlap_min_tokens, "\n");
}

json::object prediction_json(const parallel::Prediction& p) {
  auto step = [](const parallel::StepTime& t) {
    return json::object{{"total_ms", t.total_s * 1e3},        {"compute_ms", t.compute_s * 1e3},
                        {"allreduce_ms", t.allreduce_s * 1e3}, {"allreduce_exposed_ms", t.allreduce_exposed_s * 1e3},
                        {"p2p_ms", t.p2p_s * 1e3},             {"bubble_ms", t.bubble_s * 1e3},
                        {"stream_ms", t.stream_s * 1e3},       {"overhead_ms", t.overhead_s * 1e3},
                        {"hidden_fraction", t.hidden_fraction()}, {"bound", t.bound}};
  };
  return json::object{{"decode_tokens_per_s", p.decode_tokens_per_s},
                      {"prefill_tokens_per_s", p.prefill_tokens_per_s},
                      {"ttft_ms", p.ttft_s * 1e3},
                      {"decode_step", step(p.decode)},
                      {"prefill_step", step(p.prefill)},
                      {"weight_bytes_per_rank", p.weight_bytes_per_rank},
                      {"device_bytes_per_rank", p.device_bytes_per_rank},
                      {"note", "predicted by parallel/perf_model.h; the measured split is measured.breakdown"}};
}

double rel_error(double predicted, double measured) { return measured > 0 ? (predicted - measured) / measured : 0; }

// Decode tokens/s at the median step: the batch over sequence 0's median inter-token gap.
double median_rate(const Point& p) {
  const double p50_ms = p.measured.contains("itl_ms") ? num(p.measured.at("itl_ms").as_object(), "p50") : 0;
  return p50_ms > 0 ? static_cast<double>(p.batch) / (p50_ms * 1e-3) : 0;
}

// Speed-up and efficiency of each point against the one-rank point of the same workload.
json::array scaling(const std::vector<Point>& points, const std::string& kind) {
  json::array out;
  for (const Point& p : points) {
    if (p.kind != kind || p.status != "ok") continue;
    const Point* base = nullptr;
    for (const Point& b : points) {
      const bool same = kind == "weak" ? b.batch * p.world == p.batch * b.world : b.batch == p.batch;
      if (b.kind == kind && b.status == "ok" && b.world == 1 && same && b.prompt_len == p.prompt_len &&
          b.output_len == p.output_len) {
        base = &b;
        break;
      }
    }
    if (base == nullptr) continue;
    const double speedup = num(p.measured, "decode_tokens_per_s") / num(base->measured, "decode_tokens_per_s");
    json::object row{{"plan", p.plan->name}, {"ranks", p.world},           {"batch", p.batch},
                     {"prompt_len", p.prompt_len}, {"output_len", p.output_len}, {"baseline", base->plan->name},
                     {"speedup", speedup},     {"efficiency", speedup / p.world}};
    if (median_rate(p) > 0 && median_rate(*base) > 0) {  // robust to stalls of a shared machine
      row["speedup_p50"] = median_rate(p) / median_rate(*base);
      row["efficiency_p50"] = median_rate(p) / median_rate(*base) / p.world;
    }
    if (p.predicted && base->predicted) {
      const double ps = p.predicted->decode_tokens_per_s / base->predicted->decode_tokens_per_s;
      row["predicted_speedup"] = ps;
      row["predicted_efficiency"] = ps / p.world;
    }
    out.push_back(std::move(row));
  }
  return out;
}

// Rank 0's measured decode step: compute / exposed communication / streaming wait / sampling and
// scheduling, in ms, and the share of communication overlap hid ("-" without communication).
std::string measured_split(const json::object& measured) {
  if (!measured.contains("breakdown")) return "(child printed no breakdown)";
  const json::object& b = measured.at("breakdown").as_object();
  const json::value& hidden = b.at("comm_hidden_fraction");
  char s[96];
  std::snprintf(s, sizeof s, "%.3f/%.3f/%.3f/%.3f %s", num(b, "compute_ms"), num(b, "comm_exposed_ms"),
                num(b, "stream_wait_ms"), num(b, "sample_ms") + num(b, "schedule_ms"),
                hidden.is_null() ? "-" : cat(std::lround(100 * hidden.to_number<double>()), "%").c_str());
  return s;
}

bool stream_ordered(const json::object& measured) {
  if (!measured.contains("breakdown")) return false;
  const json::object& b = measured.at("breakdown").as_object();
  return b.contains("comm_stream_ordered") && b.at("comm_stream_ordered").as_bool();
}

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "strata" : p.string();
}

// The plot script: --plot-script, else scripts/plot-scaling.py under the working directory or
// beside the build folder; "" when none is found.
std::string plot_script(const Args& args) {
  if (args.has("plot-script")) return args.str("plot-script");
  for (const fs::path& p : {fs::current_path() / "scripts/plot-scaling.py",
                            fs::path(self_exe()).parent_path().parent_path() / "scripts/plot-scaling.py"})
    if (fs::exists(p)) return p.string();
  return "";
}

}  // namespace

int cmd_bench_scaling(int argc, char** argv) {
  const Args args("bench scaling", {{"sweep", true, "the sweep file (bench/scaling/*.yaml)"},
                                    {"out", true, "folder for report.json, the plans, logs and plots"},
                                    {"hardware", true, "hardware file for predictions (overrides the sweep's)"},
                                    {"launcher", true, "mpirun | srun | none (overrides the sweep's)"},
                                    {"launcher-args", true, "extra arguments for mpirun/srun"},
                                    {"plot-script", true, "python3 script that draws the plots"},
                                    {"no-plots", false, "write report.json only"}},
                  argc, argv, 3);
  const std::string sweep_path = args.required("sweep"), out = args.required("out");
  parallel::SweepSpec sweep = parallel::parse_sweep(read_text(sweep_path, "--sweep"), sweep_path);
  if (args.has("launcher")) sweep.launcher = args.str("launcher");
  STRATA_CHECK(sweep.launcher == "mpirun" || sweep.launcher == "srun" || sweep.launcher == "none",
               "--launcher must be mpirun, srun or none, got '", sweep.launcher, "'");
  if (args.has("hardware")) sweep.hardware = args.str("hardware");
  STRATA_CHECK_KIND(ErrorKind::kConfig, sweep.launcher != "mpirun" || !mpirun_refuses_root(args.str("launcher-args")),
                    "this sweep launches its points with mpirun, and Open MPI's mpirun refuses to run as root: ",
                    kRootFix);
  fs::create_directories(fs::path(out) / "plans");
  fs::create_directories(fs::path(out) / "logs");
  const std::string exe = self_exe();

  // The model: an existing checkpoint, or a preset made once into the output folder.
  std::string model = sweep.model_path;
  if (model.empty()) {
    model = (fs::path(out) / "model").string();
    if (!fs::exists(model)) {
      const Child c = run_child(cat(quote(exe), " make-model --preset ", sweep.model_preset, " --dtype ",
                                    sweep.model_dtype, " --out ", quote(model)), 600);
      STRATA_CHECK_KIND(ErrorKind::kIo, c.exit_code == 0, "make-model for the sweep failed (exit ", c.exit_code,
                        "): ", tail(c.output, 2000));
    }
  }
  const ModelConfig config = open_checkpoint(model)->config();
  std::optional<parallel::Hardware> hw;
  if (!sweep.hardware.empty()) hw = parallel::parse_hardware(read_text(sweep.hardware, "hardware"), sweep.hardware);

  // Points: every plan x batch x prompt x output, then the weak-scaling ones (batch = ranks x k).
  std::vector<Point> points;
  for (const parallel::SweepPlan& sp : sweep.plans) {
    std::string file = sp.file;
    if (file.empty()) {
      file = (fs::path(out) / "plans" / (sp.name + ".yaml")).string();
      std::ofstream(file) << plan_yaml(sp, model);
    }
    std::vector<std::pair<int64_t, std::string>> batches;
    for (int64_t b : sweep.batches) batches.emplace_back(b, "sweep");
    if (sweep.weak_batch_per_rank > 0) batches.emplace_back(sweep.weak_batch_per_rank * sp.world(), "weak");
    for (const auto& [b, kind] : batches)
      for (int64_t l : sweep.prompt_lens)
        for (int64_t o : sweep.output_lens) {
          Point p;
          p.plan = &sp, p.plan_file = file, p.batch = b, p.prompt_len = l, p.output_len = o, p.kind = kind;
          points.push_back(p);
        }
  }

  std::printf("sweep %s: %zu points, model %s, launcher %s%s\n", sweep_path.c_str(), points.size(), model.c_str(),
              sweep.launcher.c_str(), hw ? cat(", predictions from ", sweep.hardware).c_str() : ", no hardware file");
  // err: predicted against the mean decode rate; p50 err: against the rate of the median step
  // (sequence 0's median inter-token gap), which a machine shared with other jobs disturbs less.
  std::printf("%-12s %5s %5s %5s %5s | %10s %10s %7s %7s | %9s %9s %7s | %8s %8s | %-36s | %s\n", "plan", "ranks",
              "batch", "plen", "out", "decode/s", "pred/s", "err", "p50 err", "prefill/s", "pred/s", "err", "itl p50",
              "itl p99", "measured: cmp/comm/strm/other ms hid", "predicted split: compute/comm/bubble ms");
  int failed = 0, index = 0;
  for (Point& p : points) {
    ++index;
    // Validate first, so a plan the model cannot take is reported with its located error, not a crash.
    const parallel::ParsedPlan parsed = parallel::parse_plan_file(p.plan_file);
    std::vector<parallel::Diagnostic> diags = parsed.diagnostics;
    parallel::Plan plan = parsed.plan;
    if (parsed.ok()) {
      const auto more = parallel::validate_plan(plan, config, plan.world_size());
      diags.insert(diags.end(), more.begin(), more.end());
    }
    p.world = plan.world_size();
    if (parallel::has_errors(diags)) {
      p.status = "invalid";
      p.message = parallel::join_diagnostics(diags);
    } else if (sweep.launcher == "none" && p.world > 1) {
      p.status = "skipped";
      p.message = cat("launcher none runs one rank; this plan needs ", p.world);
    } else {
      if (hw) {
        const parallel::Partition partition = parallel::make_partition(plan, config, p.world);
        p.predicted = parallel::predict(config, parallel::plan_shape(plan, partition), *hw,
                                        {p.batch, p.prompt_len, p.output_len});
      }
      const std::string launch = sweep.launcher == "mpirun" ? cat("mpirun --oversubscribe -np ", p.world, " ")
                                 : sweep.launcher == "srun" ? cat("srun -n ", p.world, " ")
                                                            : std::string();
      const std::string body =
          cat(args.str("launcher-args"), args.has("launcher-args") ? " " : "", quote(exe), " bench decode --plan ",
              quote(p.plan_file), " --model ", quote(model), " --device ", sweep.device, " --batch ", p.batch,
              " --prompt-len ", p.prompt_len, " -n ", p.output_len);
      const std::string command = launch + body;
      const Child c = run_child(command, sweep.timeout_s);
      const std::string log = (fs::path(out) / "logs" / cat(index, "-", p.plan->name, "-b", p.batch, "-l", p.prompt_len,
                                                            "-o", p.output_len, ".log")).string();
      std::ofstream(log) << "$ " << command << "\n" << c.output;
      const auto result = last_json(c.output);
      if (c.exit_code == 0 && result) {
        p.status = "ok";
        p.measured = *result;
        if (stream_ordered(p.measured)) {
          // NCCL waits on the GPU, so the host cannot see how long a step waited for communication: the
          // same step with the all-reduces skipped (wrong numbers, same compute) tells.
          const std::string skip_command = cat(launch, body, " --skip-all-reduces");
          const Child k = run_child(skip_command, sweep.timeout_s);
          std::ofstream(log, std::ios::app) << "\n$ " << skip_command << "\n" << k.output;
          const auto skipped = last_json(k.output);
          if (k.exit_code == 0 && skipped && skipped->contains("breakdown"))
            split_by_no_comm_run(p.measured.at("breakdown").as_object(),
                                 num(skipped->at("breakdown").as_object(), "step_ms"));
        }
      } else {
        p.status = "failed";
        const bool root = c.output.find("allow-run-as-root") != std::string::npos;  // mpirun's refusal
        p.message = cat("exit ", c.exit_code, c.exit_code == 124 ? " (timed out)" : "", "; log ", log, ": ",
                        root ? cat("mpirun refuses to run as root: ", kRootFix) : tail(c.output, 600));
      }
    }
    if (p.status != "ok") {
      ++failed;
      std::printf("%-12s %5d %5lld %5lld %5lld | %s: %s\n", p.plan->name.c_str(), p.world,
                  static_cast<long long>(p.batch), static_cast<long long>(p.prompt_len),
                  static_cast<long long>(p.output_len), p.status.c_str(), tail(p.message, 300).c_str());
      continue;
    }
    const double dm = num(p.measured, "decode_tokens_per_s"), pm = num(p.measured, "prefill_tokens_per_s");
    const json::object itl = p.measured.contains("itl_ms") ? p.measured.at("itl_ms").as_object() : json::object{};
    std::string pred = "      -", perr = "     -", p50err = "     -", ppre = "     -", pperr = "     -";
    std::string split = "(no hardware file)";
    if (p.predicted) {
      const parallel::StepTime& d = p.predicted->decode;
      pred = cat(static_cast<long long>(std::llround(p.predicted->decode_tokens_per_s)));
      char e[64];
      std::snprintf(e, sizeof e, "%+.0f%%", 100 * rel_error(p.predicted->decode_tokens_per_s, dm));
      perr = e;
      if (num(itl, "p50") > 0) {
        std::snprintf(e, sizeof e, "%+.0f%%", 100 * rel_error(p.predicted->decode_tokens_per_s, median_rate(p)));
        p50err = e;
      }
      ppre = cat(static_cast<long long>(std::llround(p.predicted->prefill_tokens_per_s)));
      std::snprintf(e, sizeof e, "%+.0f%%", 100 * rel_error(p.predicted->prefill_tokens_per_s, pm));
      pperr = e;
      char s[160];
      std::snprintf(s, sizeof s, "%.2f/%.2f/%.2f (%s-bound, %.0f%% of all-reduce hidden)", d.compute_s * 1e3,
                    (d.allreduce_exposed_s + d.p2p_s) * 1e3, d.bubble_s * 1e3, d.bound.c_str(),
                    100 * d.hidden_fraction());
      split = s;
    }
    std::printf("%-12s %5d %5lld %5lld %5lld | %10.1f %10s %7s %7s | %9.1f %9s %7s | %8.2f %8.2f | %-36s | %s\n",
                p.plan->name.c_str(), p.world, static_cast<long long>(p.batch), static_cast<long long>(p.prompt_len),
                static_cast<long long>(p.output_len), dm, pred.c_str(), perr.c_str(), p50err.c_str(), pm, ppre.c_str(), pperr.c_str(),
                num(itl, "p50"), num(itl, "p99"), measured_split(p.measured).c_str(), split.c_str());
    std::fflush(stdout);
  }

  // The report.
  json::array rows;
  double abs_err = 0, abs_err_p50 = 0;
  int compared = 0, compared_p50 = 0;
  for (const Point& p : points) {
    json::object o{{"plan", p.plan->name},     {"plan_file", p.plan_file}, {"kind", p.kind},
                   {"tensor", p.plan->tp},     {"pipeline", p.plan->pp},   {"data", p.plan->dp},
                   {"ranks", p.world},         {"batch", p.batch},         {"prompt_len", p.prompt_len},
                   {"output_len", p.output_len}, {"status", p.status}};
    if (!p.message.empty()) o["message"] = p.message;
    if (p.status == "ok") o["measured"] = p.measured;
    if (p.predicted) {
      o["predicted"] = prediction_json(*p.predicted);
      if (p.status == "ok") {
        const double e = rel_error(p.predicted->decode_tokens_per_s, num(p.measured, "decode_tokens_per_s"));
        o["decode_rel_error"] = e;
        if (median_rate(p) > 0) {
          const double e50 = rel_error(p.predicted->decode_tokens_per_s, median_rate(p));
          o["decode_rel_error_p50"] = e50;
          abs_err_p50 += std::abs(e50), ++compared_p50;
        }
        o["prefill_rel_error"] = rel_error(p.predicted->prefill_tokens_per_s, num(p.measured, "prefill_tokens_per_s"));
        abs_err += std::abs(e), ++compared;
      }
    }
    rows.push_back(std::move(o));
  }
  json::object report{{"sweep", sweep.name.empty() ? sweep_path : sweep.name},
                      {"sweep_file", sweep_path},
                      {"model", model},
                      {"model_parameters", config.parameter_count()},
                      {"launcher", sweep.launcher},
                      {"device", sweep.device},
                      {"hardware", sweep.hardware},
                      {"points", std::move(rows)},
                      {"points_ok", static_cast<int64_t>(points.size()) - failed},
                      {"points_failed", failed},
                      {"strong_scaling", scaling(points, "sweep")},
                      {"weak_scaling", scaling(points, "weak")},
                      {"time_breakdown_source",
                       "measured per point in measured.breakdown (rank 0's decode steps: engine phase timers, the TP "
                       "collective's own op timing, the weight stream's wait); predicted in predicted.decode_step"}};
  if (compared > 0) report["decode_mean_abs_rel_error"] = abs_err / compared;
  if (compared_p50 > 0) report["decode_mean_abs_rel_error_p50"] = abs_err_p50 / compared_p50;
  const std::string report_path = (fs::path(out) / "report.json").string();
  {
    std::ofstream f(report_path);
    f << json::serialize(report) << "\n";
  }
  // Plots: a missing python3 or matplotlib skips them, never the sweep.
  std::string plots = "skipped (--no-plots)";
  if (!args.has("no-plots")) {
    const std::string script = plot_script(args);
    if (script.empty()) {
      plots = "skipped: scripts/plot-scaling.py not found (pass --plot-script)";
    } else {
      const Child c = run_child(cat("python3 ", quote(script), " ", quote(report_path), " ", quote(out)), 300);
      plots = c.exit_code == 0 ? tail(c.output, 400) : cat("skipped: ", tail(c.output, 400));
    }
  }
  while (!plots.empty() && plots.back() == '\n') plots.pop_back();
  std::printf("report: %s (%zu points, %d not ok)", report_path.c_str(), points.size(), failed);
  if (compared > 0)
    std::printf("; decode predicted vs measured: mean |error| %.0f%% (against the median step: %.0f%%) over %d points",
                100 * abs_err / compared, compared_p50 > 0 ? 100 * abs_err_p50 / compared_p50 : 0.0, compared);
  std::printf("\nplots: %s\n", plots.c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace strata::launcher
