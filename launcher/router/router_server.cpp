// launcher/router/router_server.cpp: relaying, retries and the router's own routes. Each relayed
// request runs on a thread of its own (blocking Beast calls with deadlines; the front server's I/O
// threads only post results back to the exchange's strand).
#include "launcher/router/router_server.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "launcher/http/openai_schema.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::router {

namespace json = boost::json;
using http::ApiError;
using http::Exchange;

namespace {

// What routing needs of a completion request: the model it names, whether it streams, a key for the
// prompt's beginning (prefix affinity) and the tokens it will take (load).
struct RequestFacts {
  std::string model;
  bool stream = false;
  uint64_t prefix_key = 0;
  int64_t tokens = 0;
};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h == 0 ? 1 : h;
}

// Prompts longer than this share a prefix key when their beginnings agree: the replica that prefilled
// one holds KV blocks the next can reuse. Shorter prompts route by load alone.
constexpr size_t kPrefixBytes = 256;

RequestFacts facts_of(const std::string& body) {
  RequestFacts f;
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return f;  // the replica answers the 400
  const json::object& o = v.as_object();
  if (const auto* m = o.if_contains("model"); m != nullptr && m->is_string()) f.model = std::string(m->as_string());
  if (const auto* s = o.if_contains("stream"); s != nullptr && s->is_bool()) f.stream = s->as_bool();
  int64_t max_tokens = 16;
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (const auto* t = o.if_contains(key); t != nullptr && t->is_int64()) max_tokens = t->as_int64();
  std::string prompt;
  if (const auto* p = o.if_contains("prompt")) prompt = json::serialize(*p);
  else if (const auto* m = o.if_contains("messages")) prompt = json::serialize(*m);
  f.tokens = static_cast<int64_t>(prompt.size() / 4) + std::max<int64_t>(max_tokens, 0);
  if (prompt.size() > kPrefixBytes) f.prefix_key = fnv1a(std::string_view(prompt).substr(0, kPrefixBytes));
  return f;
}

// The body with its "model" dropped: a route or version name means nothing to the replica, which then
// answers for the model it serves.
std::string without_model(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return body;
  v.as_object().erase("model");
  return json::serialize(v);
}

std::string error_json(int status, const std::string& type, const std::string& message) {
  ApiError e;
  e.status = status;
  e.type = type;
  e.message = message;
  return e.json();
}

// An SSE event that tells a streaming client its answer was cut (OpenAI's streams carry errors so too).
std::string stream_error_event(const std::string& message) {
  return "data: " + error_json(502, "upstream_error", message) + "\n\n";
}

}  // namespace

RouterServer::RouterServer(ReplicaSet& replicas, RouterOptions options) : replicas_(replicas), options_(options) {}

RouterServer::~RouterServer() { wait_idle(); }

void RouterServer::wait_idle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [&] { return in_flight_ == 0; });
}

void RouterServer::handle(const std::shared_ptr<Exchange>& exchange) {
  const http::HttpRequest& req = exchange->request();
  const std::string path = req.target.substr(0, req.target.find('?'));
  if (path == "/health") {
    const int healthy = replicas_.healthy_count();
    const int total = static_cast<int>(replicas_.status().size());
    json::object body{{"status", healthy > 0 ? "ok" : "unavailable"}, {"replicas_healthy", healthy}, {"replicas", total}};
    return exchange->respond(healthy > 0 ? 200 : 503, "application/json", json::serialize(body));
  }
  if (path == "/metrics")
    return exchange->respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text());
  if (path == "/router/replicas") return replicas_route(exchange);
  if (path == "/v1/models") {
    for (const Endpoint& e : replicas_.healthy_endpoints()) {
      const SimpleResponse r = http_get(e, "/v1/models", options_.metrics_timeout_s, options_.replica_headers);
      if (r.status == 200) return exchange->respond(200, "application/json", r.body);
    }
    return exchange->respond(503, "application/json",
                             error_json(503, "service_unavailable", "no healthy replica answered /v1/models"));
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (req.method != "POST")
      return exchange->respond(405, "application/json", error_json(405, "invalid_request_error", path + " takes POST"),
                               {{"Allow", "POST"}});
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (in_flight_ >= options_.max_in_flight)
        return exchange->respond(503, "application/json",
                                 error_json(503, "server_overloaded",
                                            cat("the router is relaying ", in_flight_, " requests; retry later")));
      ++in_flight_;
    }
    ++counters_.requests;
    std::thread([this, exchange] {
      relay(exchange);
      std::lock_guard<std::mutex> lock(mu_);
      if (--in_flight_ == 0) idle_.notify_all();
    }).detach();
    return;
  }
  exchange->respond(404, "application/json", error_json(404, "invalid_request_error", "no route " + path));
}

void RouterServer::relay(std::shared_ptr<Exchange> exchange) {
  const http::HttpRequest& req = exchange->request();
  const RequestFacts facts = facts_of(req.body);
  UpstreamRequest up;
  up.method = req.method;
  up.target = req.target;
  up.body = req.body;
  up.content_type = req.content_type.empty() ? "application/json" : req.content_type;
  up.headers = options_.replica_headers;

  // The call in progress, so that a client that goes away stops it.
  struct Shared {
    std::mutex mu;
    std::shared_ptr<UpstreamCall> call;
    std::atomic<bool> client_gone{false};
  };
  auto shared = std::make_shared<Shared>();
  exchange->post([exchange, shared] {
    exchange->watch_disconnect([shared] {
      shared->client_gone = true;
      std::lock_guard<std::mutex> lock(shared->mu);
      if (shared->call) shared->call->abort();
    });
  });

  std::set<int> tried;
  std::string last_error = "no healthy replica";
  int last_status = 0;
  std::string last_body, last_type;
  for (int attempt = 0; attempt < options_.max_attempts && !shared->client_gone; ++attempt) {
    const auto choice = replicas_.choose(facts.model, facts.prefix_key, tried);
    if (!choice) break;
    tried.insert(choice->index);
    if (attempt > 0) ++counters_.retries;
    auto call = std::make_shared<UpstreamCall>();
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->call = call;
    }
    const int watch = replicas_.watch(choice->index, [call] { call->abort(); });
    up.body = choice->by_version ? without_model(req.body) : req.body;
    replicas_.begin(choice->index, facts.tokens);
    bool streaming = false;  // bytes went to the client: no retry from here on
    int status = 0;
    std::string content_type, body;
    // A stream's head goes out with its first event, not before: until then a failure can still be
    // retried elsewhere. Events are passed on whole (up to their blank line), so a client that reads
    // chunk by chunk never sees half an event.
    auto pass_events = [&](bool all) {
      const size_t end = all ? body.size() : body.rfind("\n\n");
      if (end == std::string::npos || end == 0) return;
      const size_t cut = all ? end : end + 2;
      if (!streaming) {
        streaming = true;
        exchange->post([exchange, ct = content_type] { exchange->begin_stream(200, ct.empty() ? "text/event-stream" : ct); });
      }
      exchange->post([exchange, data = body.substr(0, cut)]() mutable { exchange->write(std::move(data)); });
      body.erase(0, cut);
    };
    const bool relay_stream = facts.stream;
    const UpstreamResult r = call->run(
        choice->endpoint, up, options_.timeouts,
        [&](int s, const std::string& ct) {
          status = s, content_type = ct;
          return true;
        },
        [&](std::string_view piece) {
          body.append(piece);
          if (relay_stream && status == 200) pass_events(false);
          return !shared->client_gone.load();
        });
    if (r.ok() && relay_stream && status == 200) pass_events(true);
    replicas_.unwatch(choice->index, watch);
    const bool upstream_error = !r.ok() || status >= 500;
    replicas_.end(choice->index, facts.tokens, upstream_error, r.ok() ? cat("status ", status) : r.error);
    if (shared->client_gone) return;  // nobody to answer; the replica saw the connection close
    if (!upstream_error) {
      ++counters_.completed;
      if (streaming) exchange->post([exchange] { exchange->end_stream(); });
      else if (relay_stream && status == 200)  // a stream with no events at all: still a stream
        exchange->post([exchange, ct = content_type] {
          exchange->begin_stream(200, ct.empty() ? "text/event-stream" : ct);
          exchange->end_stream();
        });
      else exchange->post([exchange, status, content_type, body = std::move(body)]() mutable {
        exchange->respond(status, content_type.empty() ? "application/json" : content_type, std::move(body));
      });
      return;
    }
    if (r.failure == UpstreamFailure::kConnect) replicas_.eject(choice->index, r.error);
    last_error = r.ok() ? cat(choice->endpoint.url(), " answered ", status) : r.error;
    if (streaming) {  // the client has part of an answer: end it with an error event
      ++counters_.failed;
      LOG_WARN("router: stream from ", choice->endpoint.url(), " cut: ", last_error);
      exchange->post([exchange, event = stream_error_event("the replica serving this stream failed; retry the request")] {
        exchange->write(event);
        exchange->end_stream();
      });
      return;
    }
    if (r.ok()) last_status = status, last_body = std::move(body), last_type = content_type;
    LOG_INFO("router: ", up.target, " failed on ", choice->endpoint.url(), " before any byte reached the client (",
             last_error, "); ", attempt + 1 < options_.max_attempts ? "retrying" : "giving up");
  }
  ++counters_.failed;
  if (last_status >= 500) {  // every replica tried answered with an error: pass the last one on
    exchange->post([exchange, last_status, last_type, last_body] {
      exchange->respond(last_status, last_type.empty() ? "application/json" : last_type, last_body);
    });
    return;
  }
  const std::string message =
      cat("no replica could answer (tried ", tried.size(), " of ", replicas_.status().size(), "; ", last_error, ")");
  exchange->post([exchange, message] {
    exchange->respond(503, "application/json", error_json(503, "service_unavailable", message));
  });
}

// A replica's per-GPU series describe its own host: labelled with the replica so that summing leaves
// them apart (two replicas' gpu="0" are different cards).
static std::string label_gpu_series(const std::string& text, const std::string& url) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    const auto brace = line.find('{');
    if (line.rfind("strata_gpu_", 0) == 0 && brace != std::string::npos)
      line.insert(brace + 1, "replica=\"" + url + "\",");
    out += line + "\n";
  }
  return out;
}

// GET lists the replicas; POST {"url": "http://h:p", "version": "v2"} registers one (idempotent: a
// replica repeats it as a heartbeat, so a restarted router learns its replicas again).
void RouterServer::replicas_route(const std::shared_ptr<Exchange>& exchange) {
  const http::HttpRequest& req = exchange->request();
  if (req.method == "GET") {
    json::array list;
    for (const ReplicaStatus& s : replicas_.status())
      list.push_back(json::object{{"url", s.url}, {"version", s.version}, {"healthy", s.healthy}});
    return exchange->respond(200, "application/json", json::serialize(json::object{{"replicas", std::move(list)}}));
  }
  if (req.method != "POST")
    return exchange->respond(405, "application/json",
                             error_json(405, "invalid_request_error", "/router/replicas takes GET or POST"),
                             {{"Allow", "GET, POST"}});
  ReplicaSpec spec;
  try {
    const json::value body = json::parse(req.body);
    const json::object* o = body.if_object();
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, o != nullptr && o->contains("url") && o->at("url").is_string(),
                      "the body must be a JSON object with \"url\": \"http://HOST:PORT\" (and optionally "
                      "\"version\")");
    spec.endpoint = parse_endpoint(std::string(o->at("url").as_string()));
    if (const json::value* v = o->if_contains("version")) {
      STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, v->is_string(), "\"version\" must be a string");
      spec.version = std::string(v->as_string());
    }
  } catch (const std::exception& e) {
    const std::string message = dynamic_cast<const Error*>(&e) != nullptr ? e.what() : cat("invalid JSON: ", e.what());
    return exchange->respond(400, "application/json", error_json(400, "invalid_request_error", message));
  }
  bool added = false;
  const int index = replicas_.find_or_add(std::move(spec), &added);
  exchange->respond(added ? 201 : 200, "application/json",
                    json::serialize(json::object{{"index", index}, {"added", added}}));
}

std::string sum_prometheus(const std::vector<std::string>& texts) {
  std::map<std::string, double> sums;  // "name{labels}" -> value, in name order
  std::map<std::string, std::vector<std::string>> meta;  // metric name -> its HELP/TYPE lines
  std::vector<std::string> order;
  for (const std::string& text : texts) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      if (line[0] == '#') {
        std::istringstream words(line);
        std::string hash, kind, name;
        words >> hash >> kind >> name;
        if ((kind == "HELP" || kind == "TYPE") && !name.empty()) {
          auto& lines = meta[name];
          if (lines.size() < 2 && std::find(lines.begin(), lines.end(), line) == lines.end()) lines.push_back(line);
        }
        continue;
      }
      const auto space = line.rfind(' ');
      if (space == std::string::npos || line.find("quantile=") != std::string::npos) continue;
      const std::string key = line.substr(0, space);
      char* end = nullptr;
      const double value = std::strtod(line.c_str() + space + 1, &end);
      if (end == line.c_str() + space + 1) continue;
      if (sums.emplace(key, 0.0).second) order.push_back(key);
      sums[key] += value;
    }
  }
  std::ostringstream out;
  std::set<std::string> described;
  for (const std::string& key : order) {
    const std::string name = key.substr(0, key.find('{'));
    std::string base = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!meta.count(base) && base.size() > std::strlen(suffix) &&
          base.compare(base.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
        base = base.substr(0, base.size() - std::strlen(suffix));
    if (described.insert(base).second)
      for (const std::string& line : meta[base]) out << line << "\n";
    std::ostringstream value;
    value.precision(17);
    value << sums[key];
    out << key << " " << value.str() << "\n";
  }
  return out.str();
}

std::string RouterServer::metrics_text() {
  std::vector<std::string> texts;
  for (const ReplicaStatus& s : replicas_.status()) {
    if (!s.healthy) continue;
    const SimpleResponse r = http_get(parse_endpoint(s.url), "/metrics", options_.metrics_timeout_s, options_.replica_headers);
    if (r.status == 200) texts.push_back(label_gpu_series(r.body, s.url));
  }
  std::ostringstream out;
  out << sum_prometheus(texts);
  auto counter = [&](const char* name, const char* help, int64_t value) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << value << "\n";
  };
  counter("strata_router_requests_total", "Completion requests the router accepted.", counters_.requests.load());
  counter("strata_router_completed_total", "Requests answered by a replica.", counters_.completed.load());
  counter("strata_router_retries_total", "Attempts on another replica after one failed before any byte was sent.",
          counters_.retries.load());
  counter("strata_router_failed_total", "Requests answered with an error or a cut stream.", counters_.failed.load());
  out << "# HELP strata_router_replica_healthy Whether the replica is in rotation.\n"
         "# TYPE strata_router_replica_healthy gauge\n";
  const auto status = replicas_.status();
  for (const ReplicaStatus& s : status) out << "strata_router_replica_healthy{replica=\"" << s.url << "\"} " << (s.healthy ? 1 : 0) << "\n";
  out << "# HELP strata_router_replica_in_flight Requests being relayed to the replica.\n"
         "# TYPE strata_router_replica_in_flight gauge\n";
  for (const ReplicaStatus& s : status) out << "strata_router_replica_in_flight{replica=\"" << s.url << "\"} " << s.in_flight << "\n";
  for (const auto& [name, help, field] :
       {std::tuple{"strata_router_replica_requests_total", "Attempts relayed to the replica.", &ReplicaStatus::requests},
        std::tuple{"strata_router_replica_failures_total", "Attempts that failed on the replica.", &ReplicaStatus::failures},
        std::tuple{"strata_router_replica_ejections_total", "Times the replica was taken out of rotation.",
                   &ReplicaStatus::ejections},
        std::tuple{"strata_router_replica_readmissions_total", "Times the replica came back into rotation.",
                   &ReplicaStatus::readmissions}}) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
    for (const ReplicaStatus& s : status) out << name << "{replica=\"" << s.url << "\"} " << s.*field << "\n";
  }
  return out.str();
}

}  // namespace strata::launcher::router
