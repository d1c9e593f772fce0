// launcher/cmd_serve.cpp: `strata serve`: an OpenAI-compatible HTTP server (launcher/http/) over the
// serving Engine. World rank 0 listens (before the model loads, so /health reports "loading") and
// submits to a ReplicaRouter: with data-parallel replicas (parallel.data > 1) each request goes to the
// replica with the least outstanding tokens, replica 0 being rank 0's own Engine and the others
// reached through their drivers (launcher/replica_server.h). Every rank runs its Engine's step loop on
// its main thread (the thread that made the communicators); only rank 0's link thread to the other
// drivers talks besides. SIGTERM/SIGINT: stop accepting, answer every request in flight on every
// replica (cancelling what is left after --drain-timeout), shut every replica down, exit 0; a second
// signal cancels what is left at once. It listens on loopback unless --host opens it; --api-key (or
// STRATA_API_KEY) requires an OpenAI Bearer token on every route but /health.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include <sys/resource.h>
#include <unistd.h>

#include "launcher/commands.h"
#include "launcher/gpu_monitor.h"
#include "launcher/http/chat_template.h"
#include "launcher/http/engine_frontend.h"
#include "launcher/http/http_server.h"
#include "launcher/http/image_fetch.h"
#include "launcher/http/metrics.h"
#include "launcher/http/remote_replicas.h"
#include "launcher/http/replica_router.h"
#include "launcher/http/routes.h"
#include "launcher/http/request_images.h"
#include "launcher/http/sampling_defaults.h"
#include "launcher/image_input.h"
#include "launcher/rank_runtime.h"
#include "launcher/replica_server.h"
#include "launcher/router/registration.h"
#include "launcher/session_flags.h"
#include "parallel/byte_size.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/models/llava_image_encoder.h"

namespace strata::launcher {
namespace {
using Clock = std::chrono::steady_clock;
constexpr int64_t kDefaultMaxBody = int64_t{4} << 20;  // --max-body-bytes for text-only models

std::vector<FlagSpec> serve_flags() {
  std::vector<FlagSpec> flags = session_flags();
  flags.insert(flags.end(), {
      {"host", true, "address to listen on (default 127.0.0.1; 0.0.0.0 listens on every interface)"},
      {"api-key", true, "require 'Authorization: Bearer KEY' on every route but /health (default: $STRATA_API_KEY)"},
      {"allowed-origins", true, "browser origins allowed by CORS, comma-separated, or * (default: none, CORS off)"},
      {"max-connections", true, "open connections before new ones get 503 (default: the open-file limit less 128)"},
      {"read-timeout", true, "seconds a request body may stall before 408 (default 10)"},
      {"register-with", true, "announce this replica to a strata router at URL (POST /router/replicas, repeated "
                              "every 5 s as a heartbeat)"},
      {"advertise-url", true, "with --register-with: the URL the router calls (default http://HOST:PORT of "
                              "--host, or this machine's hostname when --host is 0.0.0.0)"},
      {"register-version", true, "with --register-with: the model version this replica serves (for --route)"},
      {"register-key", true, "with --register-with: the router's API key (default: STRATA_ROUTER_API_KEY)"},
      {"stall-timeout", true, "seconds without an engine step while requests wait before /health says 503 (default 60); "
                         "after a stop signal, min(this, 10) s without a step ends the requests with an error (a rank died)"},
      {"port", true, "TCP port (default: the plan's serve.port, else 8080; 0 picks a free one)"},
      {"max-batch-tokens", true, "token budget of one engine step (default: plan, else 2048)"},
      {"max-seqs", true, "sequences running at once (default: plan, else 64)"},
      {"max-queue", true, "waiting requests before 503 (default: plan, else 256)"},
      {"block-size", true, "KV cache block size in tokens (default: plan, else 16)"},
      {"kv-budget", true, "KV cache memory: a size (8GiB) or a share of the memory free after the weights (90%)"},
      {"no-prefix-caching", false, "do not reuse KV blocks of shared prompt prefixes"},
      {"served-model-name", true, "model id in the API (default: the model's file or directory name)"},
      {"chat-template", true, "llama2, llama3 or chatml (default: chosen from the vocabulary)"},
      {"http-threads", true, "I/O threads of the HTTP server (default 2)"},
      {"max-body-bytes", true, "largest request body accepted (default 4194304; vision models: one image of "
                               "--max-image-bytes, base64-encoded, plus 1 MiB)"},
      {"drain-timeout", true, "seconds to let requests finish after SIGTERM before cancelling (default 30)"},
      {"image-dir", true, "vision models: serve image files named in requests (file:// or a path) from under "
                          "this directory only (default: none, only inline data: URLs)"},
      {"image-url-hosts", true, "vision models: fetch http(s) image URLs from these hosts (comma list of names, "
                                "*.domain patterns, or * for any); hosts that resolve to loopback, private or "
                                "link-local addresses only when named (default: none, remote URLs refused)"},
      {"image-url-timeout", true, "vision models: seconds one remote image's fetch may take, redirects included "
                                  "(default 10)"},
      {"image-url-ca-file", true, "vision models: PEM file of CA certificates trusted for https image URLs, "
                                  "besides the system's (default: the system's only)"},
      {"max-image-bytes", true, "vision models: largest encoded image accepted (default 20971520)"},
      {"max-image-pixels", true, "vision models: largest width x height an image header may declare, checked "
                                 "before decoding (default 50000000)"},
      {"max-images-per-request", true, "vision models: images one chat request may carry (default 8)"},
  });
  return flags;
}

std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

struct ServeConfig {
  int port = 8080;
  int64_t max_batch_tokens = 2048, max_seqs = 64, max_queue = 256, block_size = 16, kv_tokens = 0;
  parallel::Budget kv_budget;  // sizes the KV cache from free memory when kv_tokens is not given
  std::string kv_budget_source;
};

ServeConfig serve_config(const Args& args, const RankRuntime* rank) {
  ServeConfig c;
  if (rank != nullptr) {
    const parallel::ServeSection& s = rank->plan().serve;
    c.port = s.port;
    c.max_batch_tokens = s.max_batch_tokens;
    c.max_seqs = s.max_seqs;
    c.max_queue = s.max_queue;
    c.block_size = s.block_size;
    if (s.kv_blocks > 0) c.kv_tokens = s.kv_blocks * s.block_size;
    if (s.kv_budget.is_set()) {
      c.kv_budget = s.kv_budget;
      c.kv_budget_source = rank->plan().source + ": serve.kv_budget";
    }
  }
  if (args.has("kv-budget")) {
    const std::string text = args.str("kv-budget");
    c.kv_budget = parallel::Budget{};
    if (auto b = parallel::parse_byte_size(text)) c.kv_budget.bytes = *b;
    else if (auto p = parallel::parse_percent(text)) c.kv_budget.percent = *p;
    else STRATA_THROW(ErrorKind::kInvalidArgument, "--kv-budget '", text, "' is not a size (8GiB) or a share (90%)");
    c.kv_budget_source = "--kv-budget";
  }
  c.port = static_cast<int>(args.integer("port", c.port, 0, 65535));
  c.max_batch_tokens = args.integer("max-batch-tokens", c.max_batch_tokens, 1, int64_t{1} << 24);
  c.max_seqs = args.integer("max-seqs", c.max_seqs, 1, 1 << 20);
  c.max_queue = args.integer("max-queue", c.max_queue, 0, 1 << 24);
  c.block_size = args.integer("block-size", c.block_size, 1, 4096);
  if (args.has("kv-tokens")) c.kv_tokens = args.integer("kv-tokens", 0, 1, int64_t{1} << 32);
  return c;
}

// KV tokens a budget allows on this rank: its share of the free memory (after the weights) or its size,
// over the bytes one token takes here. Every rank of every replica must have the same block count (the
// driver schedules blocks for all of them), so the smallest count wins, agreed over the world.
int64_t kv_tokens_from_budget(ModelSession& session, const ServeConfig& config, RankRuntime* rank) {
  const int64_t free_bytes = config.kv_budget.percent > 0 ? session.device_free_bytes() : 0;
  const int64_t bytes = config.kv_budget.resolve(free_bytes);
  const int64_t block_bytes = session.kv_bytes_per_token() * config.block_size;
  int64_t blocks = std::min<int64_t>(bytes / block_bytes, INT32_MAX);
  if (rank != nullptr && rank->world_size() > 1) {
    Tensor t = Tensor::empty({1}, DType::kI32);
    t.data<int32_t>()[0] = static_cast<int32_t>(-blocks);  // the max of the negatives is the min
    rank->world().all_reduce_async(t, comm::ReduceOp::kMax)->wait();
    blocks = -static_cast<int64_t>(t.data<int32_t>()[0]);
  }
  STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, blocks >= 1, config.kv_budget_source, " (", config.kv_budget.str(),
                    ") leaves room for no KV block of ", config.block_size, " tokens (", block_bytes,
                    " bytes) on some rank; raise it or give --kv-tokens");
  if (blocks * config.block_size < session.config().max_seq)
    LOG_WARN(config.kv_budget_source, " (", config.kv_budget.str(), ") holds ", blocks * config.block_size,
             " tokens, less than one full context of ", session.config().max_seq,
             "; requests longer than that are refused");
  LOG_INFO("KV cache from ", config.kv_budget_source, " (", config.kv_budget.str(), "): ", blocks, " blocks of ",
           config.block_size, " tokens, ", blocks * block_bytes, " bytes per rank");
  return blocks * config.block_size;
}

// Connections the server may hold: the open-file limit (raised to its hard ceiling first) less room
// for the model's files, logs and sockets to peers.
int default_max_connections() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = std::min<rlim_t>(limit.rlim_max, 1 << 20);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return static_cast<int>(std::clamp<int64_t>(static_cast<int64_t>(limit.rlim_cur) - 128, 16, 65536));
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) out.push_back(item);
    pos = comma + 1;
  }
  return out;
}

// Rank 0's share of the step loop: routing, readiness, failure of a remote replica, the drain.
struct RouterSide {
  http::EngineFrontend& frontend;
  http::ReplicaRouter& router;
  http::RemoteReplicas* remotes;  // null with one replica
  const std::atomic<bool>& stop_requested;
  const std::atomic<bool>& stop_now;  // a second signal: cancel what is left without waiting
  double drain_timeout_s;
  std::function<std::string()> failure;  // why a remote replica failed; empty while none has
  std::function<void()> on_ready;
};

// `--register-with URL`: this replica announces itself to a strata router until it exits.
std::unique_ptr<router::Registration> register_with_router(const Args& args, const std::string& address, int port) {
  router::RegistrationOptions o;
  o.router = router::parse_endpoint(args.str("register-with"));
  std::string host = address;
  if (host == "0.0.0.0" || host == "::") {
    char name[256] = {};
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, gethostname(name, sizeof(name) - 1) == 0,
                      "--register-with: this machine has no hostname to advertise; pass --advertise-url");
    host = name;
  }
  o.self_url = args.str("advertise-url", cat("http://", host, ":", port));
  router::parse_endpoint(o.self_url);  // checked here, with the flag's name in the error
  o.version = args.str("register-version");
  const char* env_key = std::getenv("STRATA_ROUTER_API_KEY");
  const std::string key = args.str("register-key", env_key != nullptr ? env_key : "");
  if (!key.empty()) o.headers.emplace_back("Authorization", "Bearer " + key);
  return std::make_unique<router::Registration>(std::move(o));
}

// After a stop signal the step loop must keep stepping to drain. One that makes no step for `stuck_s`
// while requests wait is blocked in a collective with a rank that died (mpirun signals every rank when
// one dies, then SIGKILLs them after its grace): answer every request with an error event from here,
// while this process still can, instead of cutting the streams.
class StopWatchdog {
 public:
  StopWatchdog(http::EngineFrontend& frontend, const std::atomic<bool>& stop_requested, double stuck_s)
      : thread_([&frontend, &stop_requested, stuck_s, this] {
          std::unique_lock<std::mutex> lock(mutex_);
          while (!done_) {
            wake_.wait_for(lock, std::chrono::milliseconds(200));
            if (done_ || !stop_requested || frontend.engine_requests() == 0) continue;
            const double idle = frontend.seconds_since_step();
            if (idle <= stuck_s) continue;
            LOG_ERROR("no engine step for ", idle, " s since the stop signal: another rank has likely died; "
                      "ending the ", frontend.engine_requests(), " requests in flight with an error");
            frontend.fail(cat("the server is stopping and a rank of this job stopped responding (no step for ",
                              static_cast<int>(idle), " s); the request did not finish: retry it"));
            return;
          }
        }) {}
  ~StopWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// The step loop of one rank (every rank but the drivers of replicas 1..; see serve_replica).
void step_loop(Engine& engine, RouterSide* side) {
  std::vector<TokenEvent> events;
  bool attached = false, shutdown_sent = false, cancelled = false;
  Clock::time_point drain_start;
  while (true) {
    const uint64_t reflected = side != nullptr ? side->router.routed(0) : 0;
    const bool more = engine.step(events, 20);
    if (side != nullptr) {
      http::EngineFrontend& frontend = side->frontend;
      frontend.note_step();
      side->router.report(0, engine.stats(), reflected);
      side->router.deliver(0, events);
      if (const std::string why = side->failure(); !why.empty())
        STRATA_THROW(ErrorKind::kComm, "a data-parallel replica failed: ", why);
      // Requests are accepted once every replica has reported, so none is left out of routing.
      if (!attached && side->router.all_ready()) {
        frontend.attach(&side->router);
        attached = true;
        side->on_ready();
      }
      if (side->stop_requested && !shutdown_sent) {
        if (drain_start == Clock::time_point{}) drain_start = Clock::now();
        const double waited = std::chrono::duration<double>(Clock::now() - drain_start).count();
        if (frontend.responses_in_flight() == 0 || waited > side->drain_timeout_s + 10) {
          engine.shutdown();  // every rank's step() returns false after this
          if (side->remotes != nullptr) side->remotes->shutdown();
          shutdown_sent = true;
        } else if ((waited > side->drain_timeout_s || side->stop_now) && !cancelled) {
          LOG_WARN(side->stop_now ? "second signal" : "drain timeout", ": cancelling ", frontend.responses_in_flight(),
                   " requests still in flight");
          frontend.cancel_all();
          cancelled = true;
        }
      }
    }
    events.clear();
    if (!more) return;
  }
}

int serve(const Args& args, SessionOptions options, RankRuntime* rank) {
  const bool is_http = rank == nullptr || rank->world_rank() == 0;
  const int replicas = rank != nullptr ? rank->replicas() : 1;
  const double comm_timeout_s = rank != nullptr ? rank->comm_timeout_s() : 300;
  // The drivers of all replicas (rank r = replica r's driver): a split of the world, so every rank
  // takes part, before anything else talks on the world.
  std::unique_ptr<comm::Communicator> drivers;
  if (replicas > 1) {
    const bool driver = rank->part().pp == 0 && rank->part().tp == 0;
    drivers = rank->world().split(driver ? 0 : -1, rank->replica_index(), "dp drivers");
  }
  const ServeConfig config = serve_config(args, rank);
  options.block_size = config.block_size;
  options.generator.max_step_tokens = config.max_batch_tokens;
  options.generator.max_running = config.max_seqs;
  options.generator.max_queue = config.max_queue;
  options.generator.prefix_caching = !args.has("no-prefix-caching");
  if (config.kv_tokens > 0) options.kv_tokens = config.kv_tokens;

  http::Metrics metrics;
  http::EngineFrontend frontend;
  const double stall_timeout_s = args.number("stall-timeout", 60, 0.1, 86400);
  frontend.set_stall_timeout(stall_timeout_s);
  std::atomic<http::Routes*> routes_ptr{nullptr};
  std::atomic<bool> stop_requested{false}, stop_now{false};
  std::unique_ptr<http::HttpServer> server;
  std::unique_ptr<router::Registration> registration;
  if (is_http) {
    http::ServerOptions so;
    so.address = args.str("host", "127.0.0.1");
    so.port = config.port;
    so.threads = static_cast<int>(args.integer("http-threads", 2, 1, 64));
    so.max_body_bytes = static_cast<size_t>(args.integer("max-body-bytes", kDefaultMaxBody, 1024, int64_t{1} << 34));
    so.read_timeout_s = static_cast<int>(args.integer("read-timeout", 10, 1, 3600));
    so.max_connections = static_cast<int>(args.integer("max-connections", default_max_connections(), 1, 1 << 20));
    const char* env_key = std::getenv("STRATA_API_KEY");
    so.access.api_key = args.str("api-key", env_key != nullptr ? env_key : "");
    so.access.allowed_origins = split_list(args.str("allowed-origins"));
    server = std::make_unique<http::HttpServer>(so, [&](const std::shared_ptr<http::Exchange>& exchange) {
      if (http::Routes* routes = routes_ptr.load()) return routes->handle(exchange);
      const bool health = exchange->request().target == "/health";
      exchange->respond(503, "application/json",
                        health ? "{\"status\": \"loading\"}"
                               : "{\"error\": {\"message\": \"the model is still loading; retry shortly\", "
                                 "\"type\": \"server_error\", \"param\": null, \"code\": \"loading\"}}",
                        {{"Retry-After", "5"}});
    });
    server->on_signal([&](int signal) {
      if (stop_requested.exchange(true)) {
        if (!stop_now.exchange(true)) LOG_WARN("signal ", signal, " again: cancelling the requests in flight");
        return;
      }
      LOG_INFO("signal ", signal, ": no new requests; finishing the ", frontend.responses_in_flight(), " in flight");
      frontend.drain();
      server->stop_accepting();
    });
    server->start();
    // The pid is the one to signal for a graceful stop under mpirun (mpirun's own SIGTERM handling
    // kills the ranks after odls_base_sigkill_timeout, 1 s by default).
    std::printf("strata serve: listening on http://%s:%d (pid %d)\n", so.address.c_str(), server->port(),
                static_cast<int>(getpid()));
    if (!http::is_loopback_address(so.address) && so.access.api_key.empty())
      LOG_WARN("listening on ", so.address, " without an API key: anyone who can reach port ", server->port(),
               " can use this server; set --api-key or STRATA_API_KEY");
    std::fflush(stdout);
    if (args.has("register-with")) registration = register_with_router(args, so.address, server->port());
  } else {
    // Only rank 0 decides when to stop; the others follow its engine shutdown.
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
  }

  const std::unique_ptr<ModelSession> owned = open_session(options, rank);
  ModelSession& session = *owned;
  const ModelConfig& model = session.config();
  int64_t kv_tokens = config.kv_tokens > 0 ? config.kv_tokens : 4 * model.max_seq;
  if (config.kv_tokens == 0 && config.kv_budget.is_set()) {
    kv_tokens = kv_tokens_from_budget(session, config, rank);
  }
  session.prepare(kv_tokens);
  Engine& engine = session.generator().engine();
  // Every rank's card (NVML) reaches its replica's driver every few seconds, so /metrics shows each rank's
  // GPU on every node of the job.
  engine.set_telemetry(kRankGpuTelemetryInterval,
                       rank_gpu_telemetry(session.backend(), rank != nullptr ? rank->world_rank() : 0));
  // A vision-language model: every rank of the first stage holds its share of the vision tower (split over
  // the stage's TP group, or whole where TP does not divide it) and encodes the images its steps reach
  // (Engine::set_image_encoder).
  const std::optional<VisionModel> llava = vision_model_of(options, session);
  std::unique_ptr<LlavaImageEncoder> image_encoder;
  if (llava && session.shard().first_stage) {
    image_encoder =
        std::make_unique<LlavaImageEncoder>(llava->config, session.backend(), llava->weights, &session.tp());
    engine.set_image_encoder(image_encoder.get());
  }

  if (drivers && !is_http) {  // the driver of replica 1, 2, ...: requests come from rank 0's router
    parallel::DpLink router(*drivers, 0, comm_timeout_s, "the router (world rank 0)");
    try {
      serve_replica(engine, router);
    } catch (const std::exception& e) {
      report_failure(router, e.what(), std::min(comm_timeout_s, 30.0));
      throw;
    }
    return 0;
  }
  if (!is_http) {
    step_loop(engine, nullptr);
    return 0;
  }

  std::optional<http::ChatTemplate> chat;
  if (session.has_tokenizer())
    chat = args.has("chat-template")
               ? http::ChatTemplate(session.tokenizer(), http::chat_format_from_name(args.str("chat-template")))
               : http::ChatTemplate::detect(session.tokenizer());
  http::ImageServeOptions image_options;
  image_options.image_dir = args.str("image-dir");
  image_options.limits.max_bytes = args.integer("max-image-bytes", 20 << 20, 1, int64_t{1} << 34);
  image_options.limits.max_pixels = args.integer("max-image-pixels", 50'000'000, 1, int64_t{1} << 40);
  image_options.max_images = args.integer("max-images-per-request", 8, 0, 1024);
  image_options.url_hosts = http::parse_host_list(args.str("image-url-hosts"));
  image_options.url_timeout_s = args.number("image-url-timeout", 10, 0.001, 3600);
  image_options.url_ca_file = args.str("image-url-ca-file");
  std::optional<http::ServedVision> vision;
  if (llava) {
    // Images arrive base64-encoded in the body: by default it takes one image of the largest accepted size
    // (4/3 of its bytes) and 1 MiB of text around it.
    const int64_t image_body = (image_options.limits.max_bytes + 2) / 3 * 4 + (int64_t{1} << 20);
    if (!args.has("max-body-bytes") && image_body > kDefaultMaxBody) {
      server->set_max_body_bytes(static_cast<size_t>(image_body));
      LOG_INFO("serve: request bodies up to ", image_body, " bytes (one base64 image of --max-image-bytes ",
               image_options.limits.max_bytes, "; --max-body-bytes sets it)");
    }
    vision.emplace();
    vision->image_token_id = llava->config.image_token_id;
    vision->features_for = [config = llava->config](int64_t height, int64_t width) {
      return config.features_for(height, width);
    };
    vision->processor = llava->processor;
    if (chat) chat->set_image_token(llava->config.image_token_id);
  }
  http::ServedModel served;
  served.name = args.str("served-model-name", default_model_name(rank != nullptr ? rank->model_path() : options.model_path));
  served.context = model.max_seq;
  served.vocab_size = model.vocab_size;
  served.eos_ids = model.eos_ids;
  std::string defaults_source;
  served.sampling_defaults =
      http::sampling_defaults_for(rank != nullptr ? rank->model_path() : options.model_path, &defaults_source);
  LOG_INFO("requests without sampling fields use ", defaults_source, ": temperature ",
           served.sampling_defaults.temperature, ", top_p ", served.sampling_defaults.top_p);
  const auto routes = std::make_unique<http::Routes>(
      frontend, metrics, session.has_tokenizer() ? &session.tokenizer() : nullptr, chat, served);
  routes->set_images(http::RequestImages(image_options, vision));
  routes_ptr = routes.get();

  // Declared so that the link thread (in remotes) stops before the router it reports to goes away.
  http::EngineAdapter local(engine);
  std::unique_ptr<http::ReplicaRouter> router;
  std::unique_ptr<http::RemoteReplicas> remotes;
  std::vector<http::ReplicaRouter::Replica> members = {{&local, 0}};
  if (drivers) {
    remotes = std::make_unique<http::RemoteReplicas>(*drivers, comm_timeout_s);
    for (int r = 1; r < replicas; ++r) members.push_back({&remotes->replica(r), config.max_queue});
  }
  router = std::make_unique<http::ReplicaRouter>(
      members, [&frontend](const std::vector<TokenEvent>& events) { frontend.dispatch(events); });
  router->on_batch([&metrics](double sequences) { metrics.observe_batch(sequences); });
  std::mutex failure_mutex;
  std::string failure;
  if (remotes)
    remotes->start(*router, [&](const std::string& why) {
      {
        std::lock_guard<std::mutex> lock(failure_mutex);
        failure = why;
      }
      // Answer every request now (the job ends after this); the step loop sees `failure` next.
      frontend.fail(cat("a data-parallel replica failed: ", why));
    });

  RouterSide side{frontend, *router, remotes.get(), stop_requested, stop_now, args.number("drain-timeout", 30, 0, 86400),
                  [&] {
                    std::lock_guard<std::mutex> lock(failure_mutex);
                    return failure;
                  },
                  [&] {
                    LOG_INFO("serving '", served.name, "' (context ", model.max_seq, ", chat template ",
                             chat ? http::chat_format_name(chat->format()) : "none", ", ", replicas,
                             replicas > 1 ? " replicas" : " replica", ") on port ", server->port());
                  }};
  // GPU series of every rank of every replica (set here: the server is stopped before these go away).
  metrics.set_extra_hook([&engine, &remotes] {
    std::vector<std::vector<int32_t>> ranks = engine.rank_telemetry();
    if (remotes) {
      std::vector<std::vector<int32_t>> more = remotes->rank_telemetry();
      ranks.insert(ranks.end(), more.begin(), more.end());
    }
    return render_rank_gpu_metrics(ranks);
  });
  const StopWatchdog watchdog(frontend, stop_requested, std::min(10.0, stall_timeout_s));
  try {
    step_loop(engine, &side);
    if (remotes && !remotes->wait_closed(comm_timeout_s))
      STRATA_THROW(ErrorKind::kComm, "not every data-parallel replica shut down cleanly",
                   side.failure().empty() ? "" : ": " + side.failure());
  } catch (const std::exception& e) {
    frontend.fail(cat("the engine failed: ", e.what()));
    server->stop();  // lets the error responses go out first
    throw;
  }
  // Every replica has ended its requests; anything still open was lost on the way: answer it.
  if (frontend.engine_requests() > 0) frontend.fail("the server shut down before this request finished");
  server->stop();
  LOG_INFO("shut down cleanly");
  return 0;
}

int run(const Args& args) {
  return run_with_plan(args, [&](const SessionOptions& o, RankRuntime* rank) { return serve(args, o, rank); });
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  const Args args("serve", serve_flags(), argc, argv, 2);
  if (args.has("verbose")) log::set_level(log::Level::kDebug);
  return run(args);
}

}  // namespace strata::launcher
