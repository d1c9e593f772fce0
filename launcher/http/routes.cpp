// launcher/http/routes.cpp: request routing and the generation call: validation, tokenization,
// submission, then events -> text (stop strings), SSE chunks or one JSON body, and metrics. Parsing and
// tokenization run on a worker (WorkQueue); a call then lives on its connection's strand; the engine
// thread only pushes into its RequestChannel.
#include "launcher/http/routes.h"

#include <boost/json.hpp>

#include <chrono>
#include <cstdio>
#include <random>

#include "launcher/http/choice_text.h"
#include "launcher/http/openai_schema.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/tokenizer/unicode.h"

namespace strata::launcher::http {
namespace json = boost::json;
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }

ApiError error_for(const std::exception& e) {
  ApiError err;
  const auto* se = dynamic_cast<const Error*>(&e);
  err.message = e.what();
  if (se == nullptr || (se->kind() != ErrorKind::kInvalidArgument && se->kind() != ErrorKind::kConfig))
    LOG_WARN("request failed: ", e.what());  // the client gets the message without locations or peers
  if (se != nullptr && (se->kind() == ErrorKind::kInvalidArgument || se->kind() == ErrorKind::kConfig)) {
    err.status = 400;
  } else if (se != nullptr && (se->kind() == ErrorKind::kOutOfMemory || se->kind() == ErrorKind::kTimeout)) {
    err.status = 503;
    err.type = "server_error";
  } else {
    err.status = 500;
    err.type = "server_error";
  }
  return err;
}

ApiError unavailable(ServeState state) {
  ApiError e;
  e.status = 503;
  e.type = "server_error";
  e.code = state == ServeState::kLoading ? "loading" : state == ServeState::kDraining ? "shutting_down" : "unavailable";
  e.message = state == ServeState::kLoading    ? "the model is still loading; retry shortly"
              : state == ServeState::kDraining ? "the server is shutting down"
                                               : "the engine failed; this server cannot serve requests";
  return e;
}

struct Choice {
  uint64_t engine_id = 0;
  int index = 0;
  int64_t prompt_tokens = 0;
  int32_t last_prompt = -1;  // context of the first token's text
  std::unique_ptr<ChoiceText> text;
  std::vector<int32_t> tokens;
  // Per token: where its text starts in the choice's text, in characters (OpenAI's text_offset).
  std::vector<int64_t> offsets;
  std::string bytes;            // every token's bytes so far
  size_t counted_bytes = 0;     // the complete-character prefix of `bytes` counted so far...
  int64_t counted_chars = 0;    // ...and its characters
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> tops;  // the engine's best alternatives per token
  std::string finish_reason;
  bool finished = false;
};

// One generation request from arrival to its last byte.
class GenerationCall : public std::enable_shared_from_this<GenerationCall> {
 public:
  GenerationCall(Routes& routes, std::shared_ptr<Exchange> exchange, GenerationParams params, std::string route)
      : routes_(routes), exchange_(std::move(exchange)), params_(std::move(params)), route_(std::move(route)) {}

  // Validates against the model, tokenizes, submits. Answers the error itself when it fails.
  // `images` belong to prompts[0] (a chat request has one prompt).
  void start(const std::vector<std::vector<int32_t>>& prompts, const std::vector<int32_t>& extra_stop_ids,
             std::vector<RequestImage> images) {
    EngineFrontend& frontend = routes_.frontend();
    const ServedModel& model = routes_.model();
    std::weak_ptr<GenerationCall> weak = weak_from_this();
    channel_ = std::make_shared<RequestChannel>([weak] {
      if (auto self = weak.lock()) self->exchange_->post([self] { self->on_events(); });
    });
    frontend.begin_response();
    in_flight_ = true;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int64_t len = static_cast<int64_t>(prompts[i].size());
      int64_t max_tokens = params_.max_tokens;
      if (max_tokens < 0) max_tokens = params_.chat ? model.context - len : std::min(model.default_max_tokens, model.context - len);
      if (len >= model.context || len + max_tokens > model.context) {
        const std::string which = params_.chat ? "messages" : "prompt";
        return fail_start(bad_request(len >= model.context ? which : "max_tokens",
                                      cat("the ", which, " has ", len, " tokens; with max_tokens ", max_tokens,
                                          " that exceeds the model's context of ", model.context, " tokens")));
      }
      EngineRequest r;
      r.id = frontend.next_id();
      r.prompt = prompts[i];
      r.max_new_tokens = max_tokens;
      r.sampling = params_.sampling;
      r.logprobs = std::max(0, params_.logprobs);
      if (!params_.ignore_eos) r.stop_ids = model.eos_ids;
      r.stop_ids.insert(r.stop_ids.end(), extra_stop_ids.begin(), extra_stop_ids.end());
      if (i == 0) r.images = std::move(images);
      Choice c;
      c.engine_id = r.id;
      c.index = static_cast<int>(i);
      c.prompt_tokens = len;
      c.last_prompt = prompts[i].back();
      c.text = std::make_unique<ChoiceText>(routes_.tokenizer(), params_.stop, prompts[i].back());
      SubmitResult result = SubmitResult::kUnavailable;
      try {
        result = frontend.submit(std::move(r), channel_);
      } catch (const std::exception& e) {
        return fail_start(error_for(e));
      }
      if (result == SubmitResult::kQueueFull) {
        ApiError e;
        e.status = 503;
        e.type = "server_error";
        e.code = "queue_full";
        e.message = "the request queue is full; retry later";
        return fail_start(e, {{"Retry-After", "1"}});
      }
      if (result == SubmitResult::kUnavailable) return fail_start(unavailable(frontend.state()), {{"Retry-After", "5"}});
      choices_.push_back(std::move(c));
    }
    id_ = cat(params_.chat ? "chatcmpl-" : "cmpl-", choices_.front().engine_id);
    exchange_->watch_disconnect([self = shared_from_this()] { self->on_gone(); });
    if (params_.stream) {
      exchange_->begin_stream(200, "text/event-stream");
      if (params_.chat)
        for (const Choice& c : choices_) send_chunk(c, json::object{{"role", "assistant"}, {"content", ""}}, "", nullptr);
    }
  }

 private:
  void fail_start(const ApiError& error, const Headers& headers = {}) {
    for (Choice& c : choices_) routes_.frontend().cancel(c.engine_id);
    choices_.clear();
    finished_ = true;
    routes_.metrics().count_request(route_, error.status);
    exchange_->respond(error.status, "application/json", error.json(), headers);
    end_response();
  }

  void end_response() {
    if (!in_flight_) return;
    in_flight_ = false;
    routes_.frontend().end_response();
  }

  Choice* find(uint64_t engine_id) {
    for (Choice& c : choices_)
      if (c.engine_id == engine_id) return &c;
    return nullptr;
  }

  void on_events() {
    const std::vector<TokenEvent> events = channel_->take();
    if (finished_) return;
    for (const TokenEvent& e : events) {
      Choice* c = find(e.request_id);
      if (c == nullptr || c->finished) continue;
      if (e.token >= 0) on_token(*c, e);
      if (c->finished) continue;
      if (e.finished) {
        if (e.finish_reason == "stop" || e.finish_reason == "length") {
          finish_choice(*c, e.finish_reason);
        } else {
          // Cancelled by the server (shutdown) or failed: the whole call fails.
          ApiError err;
          err.status = e.finish_reason == "cancelled" ? 503 : 500;
          err.type = "server_error";
          err.code = e.finish_reason == "cancelled" ? "cancelled" : "engine_error";
          err.message = e.finish_reason == "cancelled" ? "the request was cancelled: the server is shutting down"
                                                       : "generation failed: " + e.error;
          return fail_midway(err);
        }
      }
    }
    for (const Choice& c : choices_)
      if (!c.finished) return;
    complete();
  }

  void on_token(Choice& c, const TokenEvent& e) {
    const auto now = Clock::now();
    if (!first_token_) first_token_ = now;
    last_token_ = now;
    const int32_t previous = c.tokens.empty() ? c.last_prompt : c.tokens.back();
    // Characters are counted over complete UTF-8 sequences only: a token that finishes a character
    // begun by the previous one starts where that character starts.
    const size_t complete = unicode::complete_prefix_length(c.bytes);
    for (size_t i = c.counted_bytes; i < complete; ++i)
      if ((static_cast<unsigned char>(c.bytes[i]) & 0xC0) != 0x80) ++c.counted_chars;
    c.counted_bytes = complete;
    c.offsets.push_back(c.counted_chars);
    c.bytes += c.text->token_bytes(previous, e.token);
    c.tokens.push_back(e.token);
    c.logprobs.push_back(e.logprob);
    c.tops.push_back(e.top_logprobs);
    std::string piece = c.text->push(e.token);
    if (params_.stream && (!piece.empty() || params_.logprobs >= 0)) send_text(c, piece, &e);
    if (c.text->stopped()) {
      routes_.frontend().cancel(c.engine_id);  // its "cancelled" event is ignored: the choice is done
      finish_choice(c, "stop");
    } else if (e.finished && (e.finish_reason == "stop" || e.finish_reason == "length")) {
      finish_choice(c, e.finish_reason);
    }
  }

  void finish_choice(Choice& c, const std::string& reason) {
    const std::string tail = c.text->finish();
    if (params_.stream && !tail.empty()) send_text(c, tail, nullptr);
    c.finished = true;
    c.finish_reason = reason;
    if (params_.stream) send_chunk(c, params_.chat ? json::value(json::object{}) : json::value(""), reason, nullptr);
  }

  // Token strings are what each token adds to the text in its place (" there", leading space kept),
  // the alternatives read in the same place; text_offset is where each starts in the whole choice's
  // text, streamed or not.
  json::value token_logprobs(const Choice& c, size_t begin, size_t end) const {
    if (params_.logprobs < 0) return nullptr;
    auto previous = [&](size_t i) { return i == 0 ? c.last_prompt : c.tokens[i - 1]; };
    auto byte_array = [&](size_t i, int32_t token) {
      json::array bytes;
      for (unsigned char ch : c.text->token_bytes(previous(i), token)) bytes.push_back(ch);
      return bytes;
    };
    if (params_.chat) {
      json::array content;
      for (size_t i = begin; i < end; ++i) {
        json::array top;
        for (const TokenLogprob& alt : c.tops[i])
          top.push_back(json::object{{"token", c.text->token_text(previous(i), alt.token)},
                                     {"logprob", alt.logprob},
                                     {"bytes", byte_array(i, alt.token)}});
        content.push_back(json::object{{"token", c.text->token_text(previous(i), c.tokens[i])},
                                       {"logprob", c.logprobs[i]},
                                       {"bytes", byte_array(i, c.tokens[i])},
                                       {"top_logprobs", top}});
      }
      return json::object{{"content", content}};
    }
    json::array tokens, lps, tops, offsets;
    for (size_t i = begin; i < end; ++i) {
      tokens.push_back(json::value(c.text->token_text(previous(i), c.tokens[i])));
      lps.push_back(c.logprobs[i]);
      if (params_.logprobs > 0) {
        json::object alts;
        for (const TokenLogprob& alt : c.tops[i]) alts[c.text->token_text(previous(i), alt.token)] = alt.logprob;
        tops.push_back(std::move(alts));
      } else {
        tops.push_back(nullptr);
      }
      offsets.push_back(c.offsets[i]);
    }
    return json::object{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  void send_text(const Choice& c, const std::string& text, const TokenEvent* e) {
    const size_t n = c.tokens.size();
    json::value lp = e != nullptr ? token_logprobs(c, n - 1, n) : json::value(nullptr);
    send_chunk(c, params_.chat ? json::value(json::object{{"content", text}}) : json::value(text), "", &lp);
  }

  // One SSE event: a completion chunk (text) or a chat chunk (delta).
  void send_chunk(const Choice& c, json::value content, const std::string& finish_reason, const json::value* logprobs) {
    json::object choice{{"index", c.index}};
    choice[params_.chat ? "delta" : "text"] = std::move(content);
    choice["logprobs"] = logprobs != nullptr ? *logprobs : json::value(nullptr);
    choice["finish_reason"] = finish_reason.empty() ? json::value(nullptr) : json::value(finish_reason);
    json::object chunk = envelope(params_.chat ? "chat.completion.chunk" : "text_completion");
    chunk["choices"] = json::array{std::move(choice)};
    exchange_->write("data: " + json::serialize(chunk) + "\n\n");
  }

  json::object envelope(const char* object) const {
    return json::object{{"id", id_}, {"object", object}, {"created", unix_now()}, {"model", routes_.model().name}};
  }

  json::object usage() const {
    int64_t prompt = 0, generated = 0;
    for (const Choice& c : choices_) prompt += c.prompt_tokens, generated += static_cast<int64_t>(c.tokens.size());
    return json::object{{"prompt_tokens", prompt}, {"completion_tokens", generated}, {"total_tokens", prompt + generated}};
  }

  void record(int status) {
    Metrics& m = routes_.metrics();
    m.count_request(route_, status);
    int64_t prompt = 0, generated = 0;
    for (const Choice& c : choices_) prompt += c.prompt_tokens, generated += static_cast<int64_t>(c.tokens.size());
    m.add_tokens(prompt, generated);
    if (status != 200) return;
    const auto now = Clock::now();
    m.observe_latency(seconds(arrival_, now));
    if (first_token_) {
      m.observe_ttft(seconds(arrival_, *first_token_));
      if (generated > static_cast<int64_t>(choices_.size()))
        m.observe_tpot(seconds(*first_token_, last_token_) / static_cast<double>(generated - static_cast<int64_t>(choices_.size())));
    }
  }

  void complete() {
    finished_ = true;
    record(200);
    if (params_.stream) {
      if (params_.include_usage) {
        json::object chunk = envelope(params_.chat ? "chat.completion.chunk" : "text_completion");
        chunk["choices"] = json::array{};
        chunk["usage"] = usage();
        exchange_->write("data: " + json::serialize(chunk) + "\n\n");
      }
      exchange_->write("data: [DONE]\n\n");
      exchange_->end_stream();
    } else {
      json::array out;
      for (const Choice& c : choices_) {
        json::object o{{"index", c.index}};
        if (params_.chat) o["message"] = json::object{{"role", "assistant"}, {"content", c.text->text()}};
        else o["text"] = c.text->text();
        o["logprobs"] = token_logprobs(c, 0, c.tokens.size());
        o["finish_reason"] = c.finish_reason;
        out.push_back(std::move(o));
      }
      json::object body = envelope(params_.chat ? "chat.completion" : "text_completion");
      body["choices"] = std::move(out);
      body["usage"] = usage();
      exchange_->respond(200, "application/json", json::serialize(body));
    }
    end_response();
  }

  void fail_midway(const ApiError& error) {
    finished_ = true;
    for (Choice& c : choices_)
      if (!c.finished) routes_.frontend().cancel(c.engine_id);
    record(error.status);
    if (params_.stream) {  // the status line is gone; the error travels as an event
      exchange_->write("data: " + error.json() + "\n\n");
      exchange_->write("data: [DONE]\n\n");
      exchange_->end_stream();
    } else {
      exchange_->respond(error.status, "application/json", error.json());
    }
    end_response();
  }

  void on_gone() {
    if (finished_) return;
    finished_ = true;
    for (Choice& c : choices_)
      if (!c.finished) routes_.frontend().cancel(c.engine_id);
    record(499);
    end_response();
  }

  Routes& routes_;
  std::shared_ptr<Exchange> exchange_;
  GenerationParams params_;
  std::string route_;
  std::string id_;
  std::shared_ptr<RequestChannel> channel_;
  std::vector<Choice> choices_;
  Clock::time_point arrival_ = Clock::now();
  std::optional<Clock::time_point> first_token_;
  Clock::time_point last_token_;
  bool finished_ = false, in_flight_ = false;
};

}  // namespace

Routes::Routes(EngineFrontend& frontend, Metrics& metrics, const Tokenizer* tokenizer, std::optional<ChatTemplate> chat,
               ServedModel model)
    : frontend_(frontend), metrics_(metrics), tokenizer_(tokenizer), chat_(std::move(chat)), model_(std::move(model)) {}

void Routes::send_error(Exchange& exchange, const std::string& route, const ApiError& error) {
  metrics_.count_request(route, error.status);
  Headers headers;
  if (error.status == 503) headers.emplace_back("Retry-After", "1");
  exchange.respond(error.status, "application/json", error.json(), headers);
}

void Routes::handle(const std::shared_ptr<Exchange>& exchange) {
  const HttpRequest& req = exchange->request();
  const std::string path = path_of(req.target);
  struct Route {
    const char* path;
    const char* method;
  };
  static const Route kRoutes[] = {{"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
                                  {"/v1/models", "GET"},       {"/health", "GET"},
                                  {"/metrics", "GET"}};
  const Route* route = nullptr;
  for (const Route& r : kRoutes)
    if (path == r.path) route = &r;
  if (route == nullptr) {
    ApiError e;
    e.status = 404;
    e.code = "not_found";
    e.message = "no route " + path + "; this server has POST /v1/completions, POST /v1/chat/completions, "
                "GET /v1/models, GET /health and GET /metrics";
    return send_error(*exchange, "other", e);
  }
  const bool head = req.method == "HEAD" && std::string(route->method) == "GET";
  if (req.method != route->method && !head) {
    ApiError e;
    e.status = 405;
    e.code = "method_not_allowed";
    e.message = cat(req.method, " is not allowed on ", path, "; use ", route->method);
    metrics_.count_request(path, 405);
    return exchange->respond(405, "application/json", e.json(), {{"Allow", route->method}});
  }
  if (path == "/health") {
    const ServeState state = frontend_.state();
    if (state == ServeState::kReady && frontend_.stalled()) {
      // Work waits and the engine has not finished a step for a while: a rank is hung or dead. Say so, so
      // an orchestrator (readiness/liveness probe, a router) stops sending here.
      metrics_.count_request(path, 503);
      return exchange->respond(503, "application/json",
                               cat("{\"status\": \"stalled\", \"seconds_since_step\": ",
                                   static_cast<int64_t>(frontend_.seconds_since_step()), "}"));
    }
    const int status = state == ServeState::kReady ? 200 : 503;
    metrics_.count_request(path, status);
    return exchange->respond(status, "application/json",
                             cat("{\"status\": \"", serve_state_name(state), "\"}"));
  }
  if (path == "/metrics") {
    metrics_.count_request(path, 200);
    std::string body = metrics_.render(frontend_.stats(), frontend_.state() == ServeState::kReady, frontend_.replicas());
    body += cat("# HELP strata_seconds_since_engine_step seconds since the engine last finished a step\n"
                "# TYPE strata_seconds_since_engine_step gauge\nstrata_seconds_since_engine_step ",
                frontend_.seconds_since_step(),
                "\n# HELP strata_engine_stalled 1 while requests wait and no step has ended for the stall timeout\n"
                "# TYPE strata_engine_stalled gauge\nstrata_engine_stalled ", frontend_.stalled() ? 1 : 0, "\n");
    return exchange->respond(200, "text/plain; version=0.0.4; charset=utf-8", body);
  }
  if (path == "/v1/models") {
    metrics_.count_request(path, 200);
    json::object m{{"id", model_.name}, {"object", "model"}, {"created", unix_now()}, {"owned_by", "strata"},
                   {"max_model_len", model_.context}};
    return exchange->respond(200, "application/json",
                             json::serialize(json::object{{"object", "list"}, {"data", json::array{m}}}));
  }
  generate(exchange, path == "/v1/chat/completions");
}

struct Routes::Prepared {
  GenerationParams params;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> extra_stop;
  std::vector<RequestImage> images;  // of prompts[0]
  bool images_pending = false;        // remote images: resolve_images() on fetchers_ finishes the request
  std::optional<ApiError> error;
};

void Routes::generate(const std::shared_ptr<Exchange>& exchange, bool chat) {
  // The request stays untouched until this exchange is answered, so the worker may read its body.
  workers_.post([this, exchange, chat] {
    auto prepared = std::make_shared<Prepared>();
    prepare(*prepared, exchange->request().body, chat);
    auto answer = [this, exchange, chat, prepared] {
      exchange->post([this, exchange, chat, prepared] {
        const std::string route = chat ? "/v1/chat/completions" : "/v1/completions";
        if (prepared->error) return send_error(*exchange, route, *prepared->error);
        auto call = std::make_shared<GenerationCall>(*this, exchange, std::move(prepared->params), route);
        call->start(prepared->prompts, prepared->extra_stop, std::move(prepared->images));
      });
    };
    if (!prepared->images_pending) return answer();
    fetchers_.post([this, prepared, answer] {
      resolve_images(*prepared);
      answer();
    });
  });
}

void Routes::prepare(Prepared& out, const std::string& body, bool chat) const {
  GenerationParams& params = out.params;
  params.sampling = model_.sampling_defaults;
  ApiError error;
  if (!parse_generation(body, chat, params, error)) {
    out.error = error;
    return;
  }
  if (!params.seed_given) {
    // Two requests without a seed must not draw the same tokens.
    std::random_device entropy;
    params.sampling.seed = (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
  }
  if (!params.model.empty() && params.model != model_.name) {
    error.status = 404;
    error.code = "model_not_found";
    error.param = "model";
    error.message = cat("the model '", params.model, "' does not exist; this server serves '", model_.name, "'");
    out.error = error;
    return;
  }
  if (frontend_.state() != ServeState::kReady) {
    out.error = unavailable(frontend_.state());
    return;
  }
  auto& prompts = out.prompts;
  try {
    if (chat) {
      if (!chat_ || tokenizer_ == nullptr) {
        out.error = bad_request("messages", "this model has no tokenizer, so no chat template; use /v1/completions "
                                            "with token ids");
        return;
      }
      if (std::optional<ApiError> e = images_.check(params.messages)) {  // before any rendering
        out.error = *e;
        return;
      }
      prompts.push_back(chat_->render(params.messages));
      out.extra_stop = chat_->stop_ids();
      if (images_.fetches_remote(params.messages)) {
        out.images_pending = true;  // the caller hands the rest to fetchers_
        return;
      }
      // Decoding and preprocessing run here, on a request worker (not an HTTP I/O thread).
      if (std::optional<ApiError> e = images_.resolve(params.messages, prompts.back(), out.images)) {
        out.error = *e;
        return;
      }
    } else {
      for (size_t i = 0; i < params.prompts.size(); ++i) {
        const PromptInput& p = params.prompts[i];
        if (!p.is_ids && tokenizer_ == nullptr) {
          out.error = bad_request("prompt", "this model has no tokenizer; send the prompt as an array of token ids");
          return;
        }
        // The completions prompt is the model's raw input: special tokens written in it count, as
        // in other OpenAI-compatible servers (chat content never gets that).
        prompts.push_back(p.is_ids ? p.ids : tokenizer_->encode(p.text, true, true));
        for (int32_t id : prompts.back())
          if (id < 0 || id >= model_.vocab_size) {
            out.error = bad_request("prompt", cat("token id ", id, " is outside the vocabulary [0, ", model_.vocab_size, ")"));
            return;
          }
      }
    }
  } catch (const std::exception& e) {
    out.error = error_for(e);
    return;
  }
  for (const auto& p : prompts)
    if (p.empty()) {
      out.error = bad_request(chat ? "messages" : "prompt", "the prompt encodes to no tokens");
      return;
    }
}

void Routes::resolve_images(Prepared& out) const {
  try {
    if (std::optional<ApiError> e = images_.resolve(out.params.messages, out.prompts.at(0), out.images))
      out.error = *e;
  } catch (const std::exception& e) {
    out.error = error_for(e);
  }
}

}  // namespace strata::launcher::http
