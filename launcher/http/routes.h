// launcher/http/routes.h: the endpoints of `strata serve`: POST /v1/completions and
// /v1/chat/completions (JSON or server-sent events), GET /v1/models, /health, /metrics. Turns
// requests into EngineRequests through the EngineFrontend and token events into OpenAI responses;
// every accepted request ends with a result or an OpenAI error body.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launcher/http/chat_template.h"
#include "launcher/http/engine_frontend.h"
#include "launcher/http/http_server.h"
#include "launcher/http/metrics.h"
#include "launcher/http/request_images.h"
#include "launcher/http/sampling_defaults.h"
#include "launcher/http/work_queue.h"
#include "runtime/tokenizer/tokenizer.h"

namespace strata::launcher::http {

struct ServedModel {
  std::string name;         // what /v1/models lists and requests may name
  int64_t context = 2048;   // prompt + generated tokens per sequence
  int64_t vocab_size = 0;
  std::vector<int32_t> eos_ids;
  int64_t default_max_tokens = 16;  // completions without max_tokens (OpenAI's default)
  // What a request leaves out: OpenAI's temperature 1, or the model's generation_config.json.
  SamplingParams sampling_defaults = openai_sampling_defaults();
};

class Routes {
 public:
  // `tokenizer` may be null: then only token-id prompts are accepted. `chat` null: no chat endpoint.
  Routes(EngineFrontend& frontend, Metrics& metrics, const Tokenizer* tokenizer, std::optional<ChatTemplate> chat,
         ServedModel model);
  void handle(const std::shared_ptr<Exchange>& exchange);
  // Images in chat requests (before serving starts); by default every image is refused (a text-only model).
  void set_images(RequestImages images) { images_ = std::move(images); }

  EngineFrontend& frontend() { return frontend_; }
  Metrics& metrics() { return metrics_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  const ServedModel& model() const { return model_; }

 private:
  struct Prepared;
  void generate(const std::shared_ptr<Exchange>& exchange, bool chat);
  // Parses, validates and tokenizes a generation request (on a worker thread: a 4 MB prompt takes a
  // while); the result goes back to the connection's strand.
  void prepare(Prepared& out, const std::string& body, bool chat) const;
  // The image step of a chat request whose images include remote URLs (prepare leaves it pending): run on
  // fetchers_, so a slow image host holds neither the HTTP I/O threads nor the preparation of other requests.
  void resolve_images(Prepared& out) const;
  void send_error(Exchange& exchange, const std::string& route, const struct ApiError& error);

  EngineFrontend& frontend_;
  Metrics& metrics_;
  const Tokenizer* tokenizer_;
  std::optional<ChatTemplate> chat_;
  ServedModel model_;
  RequestImages images_{ImageServeOptions{}, std::nullopt};
  WorkQueue fetchers_{8};  // remote image fetches (--image-url-hosts); joined after workers_, which post to it
  WorkQueue workers_{2};  // last: joined before the members its tasks use go away
};

}  // namespace strata::launcher::http
