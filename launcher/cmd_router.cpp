// launcher/cmd_router.cpp: `strata router`: one OpenAI-compatible front over several `strata serve`
// replicas (each its own job, any plan), given by URL or spawned and kept running on this machine.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "launcher/http/access.h"
#include "launcher/http/http_server.h"
#include "launcher/router/replica_set.h"
#include "launcher/router/replica_spawner.h"
#include "launcher/router/router_server.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {

namespace {
std::string self_binary() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  STRATA_CHECK_KIND(ErrorKind::kIo, n > 0, "router: cannot find its own executable (/proc/self/exe)");
  path[n] = '\0';
  return path;
}
// `text` as one sh word.
std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

int cmd_router(int argc, char** argv) {
  const Args args("router",
                  {{"replica", true, "a replica: http://HOST:PORT, or VERSION=http://HOST:PORT (repeatable)"},
                   {"await-registrations", false, "start with no --replica: replicas register themselves "
                                                  "(strata serve --register-with http://THIS:PORT)"},
                   {"route", true, "weighted versions of a model: MODEL=v1:90,v2:10 (repeatable)"},
                   {"spawn", true, "run N `strata serve` replicas here and restart them when they exit"},
                   {"model", true, "with --spawn: the model each replica serves"},
                   {"plan", true, "with --spawn: the plan each replica runs (use --launcher for its ranks)"},
                   {"serve-args", true, "with --spawn: more flags for each `strata serve`"},
                   {"launcher", true, "with --spawn: the command before strata, e.g. \"mpirun -np 2\""},
                   {"host", true, "address to listen on (default 127.0.0.1; 0.0.0.0 opens it to the network)"},
                   {"api-key", true, "require 'Authorization: Bearer KEY' from clients on every route but /health "
                                     "(default: $STRATA_API_KEY)"},
                   {"replica-api-key", true, "the key the replicas require, sent on every call to them (default: "
                                             "$STRATA_REPLICA_API_KEY; with --spawn, also given to the replicas)"},
                   {"port", true, "TCP port (default 8000; 0 picks a free one)"},
                   {"http-threads", true, "I/O threads of the front server (default 2)"},
                   {"health-interval", true, "seconds between health checks of a replica (default 1)"},
                   {"health-timeout", true, "a health check slower than this fails: a hung replica (default 1)"},
                   {"max-attempts", true, "replicas one request may try before it fails (default 3)"},
                   {"max-body-bytes", true, "largest request body relayed (default 67108864: images arrive base64-"
                                            "encoded; each replica applies its own limit too)"},
                   {"help", false, "show this help"}},
                  argc, argv, 2);
  if (args.has("help")) {
    std::printf("strata router: one OpenAI-compatible endpoint over several strata serve replicas\n\n%s",
                args.usage().c_str());
    return 0;
  }
  std::vector<router::ReplicaSpec> specs;
  for (const std::string& r : args.all("replica")) specs.push_back(router::parse_replica(r));
  std::vector<router::Route> routes;
  for (const std::string& r : args.all("route")) routes.push_back(router::parse_route(r));
  const int spawn = static_cast<int>(args.integer("spawn", 0, 0, 64));
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, !specs.empty() || spawn > 0 || args.has("await-registrations"),
                    "strata router: give replicas with --replica http://HOST:PORT (repeat it), run them here with "
                    "--spawn N --model PATH, or let them register (--await-registrations)\n",
                    args.usage());
  std::string spawn_command;
  if (spawn > 0) {
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, args.has("model") || args.has("plan"),
                      "strata router: --spawn needs --model PATH or --plan PLAN for the replicas");
    spawn_command = args.str("launcher") + " " + self_binary() + " serve --host 127.0.0.1";
    if (args.has("plan")) spawn_command += " --plan " + args.str("plan");
    if (args.has("model")) spawn_command += " --model " + args.str("model");
    if (args.has("serve-args")) spawn_command += " " + args.str("serve-args");
  }
  const char* client_key = std::getenv("STRATA_API_KEY");
  const char* replica_key = std::getenv("STRATA_REPLICA_API_KEY");
  const std::string replica_api_key = args.str("replica-api-key", replica_key != nullptr ? replica_key : "");
  // A spawned replica gets its key on the command line, not from the router's STRATA_API_KEY.
  if (spawn > 0) spawn_command = "env STRATA_API_KEY=" + shell_quoted(replica_api_key) + " " + spawn_command;

  router::HealthOptions health;
  health.interval_s = args.number("health-interval", 1.0, 0.05, 3600);
  health.timeout_s = args.number("health-timeout", 1.0, 0.05, 3600);
  router::ReplicaSet replicas(std::move(specs), std::move(routes), health);
  router::RouterOptions options;
  options.max_attempts = static_cast<int>(args.integer("max-attempts", 3, 1, 64));
  if (!replica_api_key.empty()) options.replica_headers.emplace_back("Authorization", "Bearer " + replica_api_key);

  router::RouterServer relay(replicas, options);
  http::ServerOptions so;
  so.address = args.str("host", "127.0.0.1");
  so.port = static_cast<int>(args.integer("port", 8000, 0, 65535));
  so.threads = static_cast<int>(args.integer("http-threads", 2, 1, 64));
  so.max_body_bytes = static_cast<size_t>(args.integer("max-body-bytes", int64_t{64} << 20, 1024, int64_t{1} << 34));
  so.access.api_key = args.str("api-key", client_key != nullptr ? client_key : "");
  if (!http::is_loopback_address(so.address) && so.access.api_key.empty())
    LOG_WARN("router: listening on ", so.address, " without an API key: anyone who reaches this port can use the "
             "replicas; set --api-key or STRATA_API_KEY");
  http::HttpServer server(so, [&](const std::shared_ptr<http::Exchange>& exchange) { relay.handle(exchange); });
  std::mutex mu;
  std::condition_variable stop_cv;
  bool stop = false;
  server.on_signal([&](int signal) {
    LOG_INFO("router: signal ", signal, ": stopping");
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    stop_cv.notify_all();
  });
  server.start();
  // Printed before any replica starts, so the first "listening on" line of the log is the router's.
  std::printf("strata router: listening on http://%s:%d (pid %d)\n", so.address.c_str(), server.port(),
              static_cast<int>(getpid()));
  std::fflush(stdout);
  replicas.start();
  std::unique_ptr<router::ReplicaSpawner> spawner;
  if (spawn > 0) {
    spawner = std::make_unique<router::ReplicaSpawner>(replicas, spawn_command, spawn);
    spawner->start();
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    stop_cv.wait(lock, [&] { return stop; });
  }
  server.stop_accepting();
  relay.wait_idle();  // the requests being relayed get their answers
  if (spawner) spawner->stop();
  server.stop();
  return 0;
}

}  // namespace strata::launcher
