// launcher/cmd_bench_serve.cpp: `strata bench serve`: load against a running OpenAI-compatible server
// (ours or any other): Poisson arrivals at --rate requests/s or a fixed --concurrency, prompt and
// output lengths from distributions, streamed requests timed per event. Prints one JSON object:
// throughput and TTFT / time per output token / end-to-end latency percentiles. With --image, each request
// is a chat completion whose user message holds --text and one of the images as an OpenAI image_url part
// (a base64 data URL), the images taken in turn.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
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

// One request's payload: token ids for /v1/completions, or (image_url set) a chat message of text and image.
struct Prompt {
  std::vector<int32_t> ids;
  std::string text, image_url;  // image_url: a data URL
};

std::string base64(const std::string& bytes) {
  static const char* const kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t j = 0; j < 3; ++j) v = v << 8 | (j < n ? static_cast<uint8_t>(bytes[i + j]) : 0u);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? kAlphabet[(v >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

// The file as a data URL, its media type from the extension (the server sniffs the bytes anyway).
std::string image_data_url(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "--image: cannot read ", path);
  std::stringstream bytes;
  bytes << in.rdbuf();
  std::string ext = path.substr(path.find_last_of('.') + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const char* type = ext == "png" ? "image/png" : ext == "webp" ? "image/webp" : "image/jpeg";
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, ext == "png" || ext == "webp" || ext == "jpg" || ext == "jpeg",
                    "--image: ", path, " is not a .png, .jpg, .jpeg or .webp file");
  return std::string("data:") + type + ";base64," + base64(bytes.str());
}

// Whether an SSE stream's bytes from `from` on hold `"key":"` with a non-empty string value (a chat stream's
// first chunk carries an empty content next to the role).
bool has_nonempty_string(const std::string& raw, const std::string& key, size_t from) {
  const std::string needle = "\"" + key + "\":\"";
  for (size_t p = raw.find(needle, from); p != std::string::npos; p = raw.find(needle, p + 1))
    if (p + needle.size() < raw.size() && raw[p + needle.size()] != '"') return true;
  return false;
}

// One streamed completion; times the first event that carries text and the end.
Sample run_request(const Url& url, const std::string& model, const std::string& api_key, const Prompt& prompt,
                   int64_t max_tokens, double timeout_s) {
  Sample s;
  s.prompt_tokens = static_cast<int64_t>(prompt.ids.size());
  const bool chat = !prompt.image_url.empty();
  json::object body{{"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true},
                    {"stream_options", json::object{{"include_usage", true}}}};
  if (chat) {
    json::array content{json::object{{"type", "text"}, {"text", prompt.text}},
                        json::object{{"type", "image_url"}, {"image_url", json::object{{"url", prompt.image_url}}}}};
    body["messages"] = json::array{json::object{{"role", "user"}, {"content", std::move(content)}}};
  } else {
    body["prompt"] = json::value_from(prompt.ids);
  }
  if (!model.empty()) body["model"] = model;
  const std::string payload = json::serialize(body);
  const std::string route = chat ? "/v1/chat/completions" : "/v1/completions";
  const std::string req = "POST " + url.path_prefix + route + " HTTP/1.1\r\nHost: " + url.host +
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
    // The text of the stream shows in the raw (chunked) bytes; the first "text":"x" (chat: "content":"x")
    // with x non-empty marks the first token.
    const size_t body_at = raw.find("\r\n\r\n");
    if (!first && body_at != std::string::npos && has_nonempty_string(raw, chat ? "content" : "text", body_at)) {
      first = true;
      s.ttft = std::chrono::duration<double>(Clock::now() - t0).count();
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
  if (const auto p = raw.find("\"prompt_tokens\":"); p != std::string::npos)
    s.prompt_tokens = std::atoll(raw.c_str() + p + 16);
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
                   {"timeout", true, "seconds per request (default 300)"},
                   {"image", true, "image file(s), comma-separated: each request is a chat completion of --text and "
                                   "the next image (a base64 data URL), for vision-language models"},
                   {"text", true, "the instruction sent with each --image (default: a ~20-token request to describe "
                                  "it)"}},
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
    Prompt prompt;
    int64_t max_tokens;
  };
  std::vector<std::string> image_urls;
  for (size_t at = 0, end = 0; args.has("image") && at <= args.str("image").size(); at = end + 1) {
    const std::string list = args.str("image");
    end = std::min(list.find(',', at), list.size());
    if (end > at) image_urls.push_back(image_data_url(list.substr(at, end - at)));
  }
  STRATA_CHECK(!args.has("image") || !image_urls.empty(), "--image names no file");
  const std::string text = args.str("text", "Describe this image in detail: the objects, their colours, where they "
                                            "are and what is happening.");
  std::vector<Work> work(static_cast<size_t>(requests));
  for (size_t i = 0; i < work.size(); ++i) {
    Work& w = work[i];
    if (!image_urls.empty()) {
      w.prompt.text = text;
      w.prompt.image_url = image_urls[i % image_urls.size()];
    } else {
      w.prompt.ids.resize(static_cast<size_t>(draw(rng, prompt_dist, prompt_len)));
      for (int32_t& id : w.prompt.ids)
        id = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(3, max_id - 1)(rng));
    }
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
                      {"prompt_len_mean", image_urls.empty()
                                              ? json::value(prompt_len)
                                              : json::value(static_cast<double>(prompt_tokens) /
                                                            static_cast<double>(std::max<int64_t>(ok, 1)))},
                      {"images", static_cast<int64_t>(image_urls.size())},
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
