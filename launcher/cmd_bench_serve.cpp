// launcher/cmd_bench_serve.cpp: `strata bench serve`: load against a running OpenAI-compatible server
// (ours or any other): Poisson arrivals at --rate requests/s or a fixed --concurrency, prompt and
// output lengths from distributions, streamed requests timed per event. Prints one JSON object:
// throughput and TTFT / time per output token / end-to-end latency percentiles.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "launcher/args.h"
#include "launcher/commands.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

struct Url {
  std::string host, port, path_prefix;
};

Url parse_url(const std::string& url) {
  STRATA_CHECK(url.rfind("http://", 0) == 0, "--url must start with http:// (got '", url, "')");
  std::string rest = url.substr(7);
  Url u;
  const auto slash = rest.find('/');
  if (slash != std::string::npos) u.path_prefix = rest.substr(slash), rest = rest.substr(0, slash);
  if (!u.path_prefix.empty() && u.path_prefix.back() == '/') u.path_prefix.pop_back();
  const auto colon = rest.rfind(':');
  u.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  u.port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  return u;
}

int connect_url(const Url& u) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(u.host.c_str(), u.port.c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) close(fd), fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

struct Sample {
  bool ok = false;
  double ttft = 0, latency = 0;
  int64_t prompt_tokens = 0, output_tokens = 0;
  std::string error;
};

// One streamed completion; times the first event that carries text and the end.
Sample run_request(const Url& url, const std::string& model, const std::string& api_key,
                   const std::vector<int32_t>& prompt, int64_t max_tokens, double timeout_s) {
  Sample s;
  s.prompt_tokens = static_cast<int64_t>(prompt.size());
  json::object body{{"prompt", json::value_from(prompt)}, {"max_tokens", max_tokens}, {"temperature", 0},
                    {"ignore_eos", true}, {"stream", true}, {"stream_options", json::object{{"include_usage", true}}}};
  if (!model.empty()) body["model"] = model;
  const std::string payload = json::serialize(body);
  const std::string req = "POST " + url.path_prefix + "/v1/completions HTTP/1.1\r\nHost: " + url.host +
                          "\r\nConnection: close\r\nContent-Type: application/json\r\n" +
                          (api_key.empty() ? std::string() : "Authorization: Bearer " + api_key + "\r\n") + "Content-Length: " +
                          std::to_string(payload.size()) + "\r\n\r\n" + payload;
  const auto t0 = Clock::now();
  const int fd = connect_url(url);
  if (fd < 0) {
    s.error = "connect failed";
    return s;
  }
  timeval tv{static_cast<time_t>(timeout_s), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    s.error = "send failed";
    return s;
  }
  std::string raw;
  char buf[16384];
  bool first = false, done = false;
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
    raw.append(buf, static_cast<size_t>(n));
    // The text of the stream shows in the raw (chunked) bytes; the first "text":"x" with x non-empty
    // marks the first token.
    if (!first && raw.find("\"text\":\"", raw.find("\r\n\r\n")) != std::string::npos) {
      const auto p = raw.find("\"text\":\"");
      if (raw.compare(p + 8, 1, "\"") != 0) first = true, s.ttft = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    if (raw.find("data: [DONE]") != std::string::npos) done = true;
  }
  close(fd);
  s.latency = std::chrono::duration<double>(Clock::now() - t0).count();
  const int status = raw.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(raw.c_str() + 9) : 0;
  const auto usage = raw.find("\"completion_tokens\":");
  if (status != 200 || !done || usage == std::string::npos) {
    s.error = "status " + std::to_string(status) + (done ? "" : ", no [DONE]");
    return s;
  }
  s.output_tokens = std::atoll(raw.c_str() + usage + 20);
  if (!first) s.ttft = s.latency;
  s.ok = true;
  return s;
}

int64_t draw(std::mt19937_64& rng, const std::string& dist, int64_t mean) {
  if (dist == "fixed") return mean;
  if (dist == "uniform") return std::uniform_int_distribution<int64_t>(std::max<int64_t>(1, mean / 2), mean * 3 / 2)(rng);
  if (dist == "exponential")
    return std::max<int64_t>(1, static_cast<int64_t>(std::llround(std::exponential_distribution<double>(1.0 / mean)(rng))));
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown length distribution '", dist, "'; use fixed, uniform or exponential");
}

json::object percentiles(std::vector<double> v, double scale) {
  if (v.empty()) return {{"mean", nullptr}, {"p50", nullptr}, {"p95", nullptr}, {"p99", nullptr}};
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(std::ceil(p * v.size())) - 1)] * scale; };
  double sum = 0;
  for (double x : v) sum += x;
  return {{"mean", sum / static_cast<double>(v.size()) * scale}, {"p50", q(0.50)}, {"p95", q(0.95)}, {"p99", q(0.99)}};
}

}  // namespace

int cmd_bench_serve(int argc, char** argv) {
  const Args args("bench serve",
                  {{"url", true, "server base URL (default http://127.0.0.1:8080)"},
                   {"model", true, "model id to send (default: none, the server's own)"},
                   {"api-key", true, "sent as 'Authorization: Bearer KEY' (default: $STRATA_API_KEY)"},
                   {"rate", true, "Poisson arrivals, requests per second (default: use --concurrency)"},
                   {"concurrency", true, "clients sending back to back (default 8, when --rate is not given)"},
                   {"requests", true, "requests in the run (default 64)"},
                   {"prompt-len", true, "mean prompt tokens (default 64)"},
                   {"output-len", true, "mean generated tokens (default 64)"},
                   {"prompt-dist", true, "fixed | uniform (mean/2 .. 3mean/2) | exponential (default uniform)"},
                   {"output-dist", true, "fixed | uniform | exponential (default fixed)"},
                   {"max-token-id", true, "prompt ids are drawn from [3, this) (default 500)"},
                   {"seed", true, "random seed (default 1)"},
                   {"timeout", true, "seconds per request (default 300)"}},
                  argc, argv, 3);
  const std::string url_text = args.str("url", "http://127.0.0.1:8080");
  const Url url = parse_url(url_text);
  const int64_t requests = args.integer("requests", 64, 1, 1 << 24);
  const double rate = args.number("rate", 0, 0, 1e6);
  const int64_t concurrency = args.integer("concurrency", 8, 1, 4096);
  const int64_t prompt_len = args.integer("prompt-len", 64, 1, 1 << 20), output_len = args.integer("output-len", 64, 1, 1 << 20);
  const std::string prompt_dist = args.str("prompt-dist", "uniform"), output_dist = args.str("output-dist", "fixed");
  const int64_t max_id = args.integer("max-token-id", 500, 4, INT32_MAX);
  const double timeout = args.number("timeout", 300, 1, 86400);
  std::mt19937_64 rng(static_cast<uint64_t>(args.integer("seed", 1, 0, INT64_MAX)));
  struct Work {
    std::vector<int32_t> prompt;
    int64_t max_tokens;
  };
  std::vector<Work> work(static_cast<size_t>(requests));
  for (Work& w : work) {
    w.prompt.resize(static_cast<size_t>(draw(rng, prompt_dist, prompt_len)));
    for (int32_t& id : w.prompt) id = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(3, max_id - 1)(rng));
    w.max_tokens = draw(rng, output_dist, output_len);
  }
  const int probe = connect_url(url);
  STRATA_CHECK_KIND(ErrorKind::kIo, probe >= 0, "cannot connect to ", url_text, "; start `strata serve` first");
  close(probe);

  std::vector<Sample> samples(work.size());
  const std::string model = args.str("model");
  const char* env_key = std::getenv("STRATA_API_KEY");
  const std::string api_key = args.str("api-key", env_key != nullptr ? env_key : "");
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  if (rate > 0) {
    std::exponential_distribution<double> gap(rate);
    auto next = Clock::now();
    for (size_t i = 0; i < work.size(); ++i) {
      std::this_thread::sleep_until(next);
      threads.emplace_back([&, i] { samples[i] = run_request(url, model, api_key, work[i].prompt, work[i].max_tokens, timeout); });
      next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
  } else {
    std::atomic<size_t> next{0};
    for (int64_t c = 0; c < concurrency; ++c)
      threads.emplace_back([&] {
        for (size_t i = next++; i < work.size(); i = next++)
          samples[i] = run_request(url, model, api_key, work[i].prompt, work[i].max_tokens, timeout);
      });
  }
  for (auto& t : threads) t.join();
  const double duration = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<double> ttft, tpot, latency;
  int64_t ok = 0, prompt_tokens = 0, output_tokens = 0;
  std::string first_error;
  for (const Sample& s : samples) {
    if (!s.ok) {
      if (first_error.empty()) first_error = s.error;
      continue;
    }
    ++ok;
    prompt_tokens += s.prompt_tokens;
    output_tokens += s.output_tokens;
    ttft.push_back(s.ttft);
    latency.push_back(s.latency);
    if (s.output_tokens > 1) tpot.push_back((s.latency - s.ttft) / static_cast<double>(s.output_tokens - 1));
  }
  json::object report{{"url", url_text},
                      {"mode", rate > 0 ? "poisson" : "concurrency"},
                      {"rate", rate > 0 ? json::value(rate) : json::value(nullptr)},
                      {"concurrency", rate > 0 ? json::value(nullptr) : json::value(concurrency)},
                      {"requests", requests},
                      {"completed", ok},
                      {"failed", requests - ok},
                      {"first_error", first_error.empty() ? json::value(nullptr) : json::value(first_error)},
                      {"prompt_len_mean", prompt_len},
                      {"output_len_mean", output_len},
                      {"duration_s", duration},
                      {"request_throughput", static_cast<double>(ok) / duration},
                      {"output_tokens_per_s", static_cast<double>(output_tokens) / duration},
                      {"prompt_tokens_per_s", static_cast<double>(prompt_tokens) / duration},
                      {"ttft_ms", percentiles(ttft, 1e3)},
                      {"tpot_ms", percentiles(tpot, 1e3)},
                      {"latency_ms", percentiles(latency, 1e3)}};
  std::printf("%s\n", json::serialize(report).c_str());
  return ok == requests ? 0 : 1;
}

}  // namespace strata::launcher
