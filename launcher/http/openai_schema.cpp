// launcher/http/openai_schema.cpp: OpenAI request validation with Boost.JSON. Every rejection names
// the field and says what is accepted; known OpenAI fields this server cannot honour are rejected
// when set to a non-default value rather than silently ignored.
#include "launcher/http/openai_schema.h"

#include <boost/json.hpp>

#include <cmath>
#include <regex>

namespace strata::launcher::http {
namespace json = boost::json;
namespace {

struct BadField {  // thrown inside this file only; parse_generation turns it into an ApiError
  std::string param, message;
};

[[noreturn]] void fail(const std::string& param, const std::string& message) { throw BadField{param, message}; }

const char* kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

double number(const json::value& v, const std::string& name, double lo, double hi) {
  double x = 0;
  if (v.is_int64()) x = static_cast<double>(v.as_int64());
  else if (v.is_uint64()) x = static_cast<double>(v.as_uint64());
  else if (v.is_double()) x = v.as_double();
  else fail(name, "'" + name + "' must be a number, got " + kind_name(v));
  if (!std::isfinite(x) || x < lo || x > hi)
    fail(name, "'" + name + "' must be between " + json::serialize(json::value(lo)) + " and " +
                   json::serialize(json::value(hi)) + ", got " + json::serialize(v));
  return x;
}

int64_t integer(const json::value& v, const std::string& name, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_int64()) x = v.as_int64();
  else if (v.is_uint64() && v.as_uint64() <= static_cast<uint64_t>(INT64_MAX)) x = static_cast<int64_t>(v.as_uint64());
  else if (v.is_double() && v.as_double() == std::floor(v.as_double()) && std::abs(v.as_double()) < 9e15)
    x = static_cast<int64_t>(v.as_double());
  else fail(name, "'" + name + "' must be an integer, got " + (v.is_double() ? json::serialize(v) : kind_name(v)));
  if (x < lo || x > hi)
    fail(name, "'" + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                   std::to_string(x));
  return x;
}

bool boolean(const json::value& v, const std::string& name) {
  if (!v.is_bool()) fail(name, "'" + name + "' must be true or false, got " + kind_name(v));
  return v.as_bool();
}

std::string string(const json::value& v, const std::string& name) {
  if (!v.is_string()) fail(name, "'" + name + "' must be a string, got " + kind_name(v));
  return std::string(v.as_string());
}

std::vector<int32_t> token_ids(const json::array& a, const std::string& name) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < a.size(); ++i)
    ids.push_back(static_cast<int32_t>(integer(a[i], name + "[" + std::to_string(i) + "]", 0, INT32_MAX)));
  return ids;
}

bool all_integers(const json::array& a) {
  for (const auto& v : a)
    if (!v.is_int64() && !v.is_uint64()) return false;
  return !a.empty();
}

// OpenAI accepts a string, an array of strings, an array of token ids, or an array of such arrays.
std::vector<PromptInput> prompts(const json::value& v) {
  std::vector<PromptInput> out;
  if (v.is_string()) {
    out.push_back({std::string(v.as_string()), {}, false});
  } else if (v.is_array() && all_integers(v.as_array())) {
    out.push_back({"", token_ids(v.as_array(), "prompt"), true});
  } else if (v.is_array() && !v.as_array().empty()) {
    const json::array& a = v.as_array();
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string name = "prompt[" + std::to_string(i) + "]";
      if (a[i].is_string()) out.push_back({std::string(a[i].as_string()), {}, false});
      else if (a[i].is_array() && !a[i].as_array().empty()) out.push_back({"", token_ids(a[i].as_array(), name), true});
      else fail("prompt", "'" + name + "' must be a string or a non-empty array of token ids, got " + kind_name(a[i]));
    }
  } else {
    fail("prompt", std::string("'prompt' must be a string, an array of token ids, or an array of those; got ") +
                       (v.is_array() ? "an empty array" : kind_name(v)));
  }
  if (out.size() > 64) fail("prompt", "at most 64 prompts per request, got " + std::to_string(out.size()));
  for (const PromptInput& p : out)
    if (!p.is_ids && p.text.empty()) fail("prompt", "'prompt' must not be empty");
  return out;
}

// A string, or an array of parts: {"type": "text", "text": ...} and, in user messages,
// {"type": "image_url", "image_url": {"url": ...}} (or the url as a plain string, as some clients send it).
void message_content(const json::value& v, const std::string& name, ChatMessage& m) {
  if (v.is_string()) {
    m.content = std::string(v.as_string());
    return;
  }
  if (!v.is_array()) fail(name, "'" + name + "' must be a string or an array of content parts, got " + kind_name(v));
  const json::array& parts = v.as_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string part = name + "[" + std::to_string(i) + "]";
    const json::object* o = parts[i].if_object();
    if (o == nullptr) fail(part, "'" + part + "' must be an object {\"type\": \"text\", \"text\": ...}");
    const json::value* type = o->if_contains("type");
    if (type != nullptr && type->is_string() && type->as_string() == "image_url") {
      if (m.role != "user")
        fail(part + ".type", "image parts are accepted in user messages only; '" + name + "' is a " + m.role +
                                 " message");
      const json::value* image = o->if_contains("image_url");
      if (image == nullptr) fail(part + ".image_url", "'" + part + ".image_url' is required");
      const json::value* url = image->is_object() ? image->as_object().if_contains("url") : image;
      if (url == nullptr) fail(part + ".image_url.url", "'" + part + ".image_url.url' is required");
      m.images.push_back({string(*url, part + ".image_url.url"), m.content.size(), part + ".image_url"});
      continue;
    }
    if (type == nullptr || !type->is_string() || type->as_string() != "text")
      fail(part + ".type", "content parts must be of type \"text\" or \"image_url\"");
    const json::value* t = o->if_contains("text");
    if (t == nullptr) fail(part + ".text", "'" + part + ".text' is required");
    m.content += string(*t, part + ".text");
  }
}

std::vector<ChatMessage> messages(const json::value& v) {
  if (!v.is_array() || v.as_array().empty())
    fail("messages", std::string("'messages' must be a non-empty array of {role, content}, got ") +
                         (v.is_array() ? "an empty array" : kind_name(v)));
  std::vector<ChatMessage> out;
  const json::array& a = v.as_array();
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json::object* o = a[i].if_object();
    if (o == nullptr) fail(name, "'" + name + "' must be an object with 'role' and 'content'");
    const json::value* role = o->if_contains("role");
    if (role == nullptr) fail(name + ".role", "'" + name + ".role' is required");
    ChatMessage m;
    m.role = string(*role, name + ".role");
    if (m.role == "developer") m.role = "system";
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail(name + ".role", "'" + name + ".role' must be system, user or assistant, got '" + m.role + "'");
    const json::value* content = o->if_contains("content");
    if (content == nullptr || content->is_null()) fail(name + ".content", "'" + name + ".content' is required");
    message_content(*content, name + ".content", m);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<std::string> stops(const json::value& v) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) {
    out.emplace_back(v.as_string());
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.as_array().size(); ++i) out.push_back(string(v.as_array()[i], "stop[" + std::to_string(i) + "]"));
  } else {
    fail("stop", std::string("'stop' must be a string or an array of strings, got ") + kind_name(v));
  }
  if (out.size() > 16) fail("stop", "at most 16 stop strings, got " + std::to_string(out.size()));
  for (const std::string& s : out)
    if (s.empty()) fail("stop", "stop strings must not be empty");
  return out;
}

// Known OpenAI fields that this server does not implement: an error when set to anything but
// their neutral value, so a client never silently gets something other than what it asked for.
void reject_unsupported(const json::object& o) {
  for (const char* name : {"frequency_penalty", "presence_penalty"})
    if (const json::value* v = o.if_contains(name); v != nullptr && !v->is_null() && number(*v, name, -2, 2) != 0)
      fail(name, std::string("'") + name + "' is not supported by this server; use 'repetition_penalty' (> 1 penalises "
                 "tokens already in the text)");
  if (const json::value* v = o.if_contains("n"); v != nullptr && !v->is_null() && integer(*v, "n", 1, 128) != 1)
    fail("n", "only n = 1 is supported; send the request several times with different seeds");
  if (const json::value* v = o.if_contains("best_of"); v != nullptr && !v->is_null() && integer(*v, "best_of", 1, 128) != 1)
    fail("best_of", "only best_of = 1 is supported");
  if (const json::value* v = o.if_contains("echo"); v != nullptr && !v->is_null() && boolean(*v, "echo"))
    fail("echo", "'echo' is not supported");
  if (const json::value* v = o.if_contains("suffix"); v != nullptr && !v->is_null())
    fail("suffix", "'suffix' (insertion) is not supported");
  if (const json::value* v = o.if_contains("logit_bias"); v != nullptr && !v->is_null() &&
                                                           !(v->is_object() && v->as_object().empty()))
    fail("logit_bias", "'logit_bias' is not supported");
  for (const char* name : {"tools", "functions", "tool_choice", "function_call"})
    if (const json::value* v = o.if_contains(name); v != nullptr && !v->is_null())
      fail(name, std::string("'") + name + "' (tool calling) is not supported");
  if (const json::value* v = o.if_contains("response_format"); v != nullptr && !v->is_null()) {
    const json::object* rf = v->if_object();
    const json::value* type = rf != nullptr ? rf->if_contains("type") : nullptr;
    if (type == nullptr || !type->is_string() || type->as_string() != "text")
      fail("response_format", "only response_format {\"type\": \"text\"} is supported");
  }
}

void parse_object(const json::object& o, bool chat, GenerationParams& p) {
  p.chat = chat;
  reject_unsupported(o);
  if (const json::value* v = o.if_contains("model"); v != nullptr && !v->is_null()) p.model = string(*v, "model");
  if (chat) {
    const json::value* v = o.if_contains("messages");
    if (v == nullptr) fail("messages", "'messages' is required");
    p.messages = messages(*v);
  } else {
    const json::value* v = o.if_contains("prompt");
    if (v == nullptr) fail("prompt", "'prompt' is required");
    p.prompts = prompts(*v);
  }
  auto get = [&](const char* name) -> const json::value* {
    const json::value* v = o.if_contains(name);
    return v != nullptr && !v->is_null() ? v : nullptr;
  };
  const int64_t kMaxTokens = int64_t{1} << 20;
  if (const auto* v = get("max_tokens")) p.max_tokens = integer(*v, "max_tokens", 1, kMaxTokens);
  if (const auto* v = get("max_completion_tokens")) p.max_tokens = integer(*v, "max_completion_tokens", 1, kMaxTokens);
  if (const auto* v = get("temperature")) p.sampling.temperature = static_cast<float>(number(*v, "temperature", 0, 100));
  if (const auto* v = get("top_p")) p.sampling.top_p = static_cast<float>(number(*v, "top_p", 1e-9, 1));
  if (const auto* v = get("top_k")) {
    const int64_t k = integer(*v, "top_k", -1, INT32_MAX);
    p.sampling.top_k = k < 0 ? 0 : static_cast<int>(k);  // -1 means off, as in vLLM
  }
  if (const auto* v = get("min_p")) p.sampling.min_p = static_cast<float>(number(*v, "min_p", 0, 0.999999));
  if (const auto* v = get("repetition_penalty"))
    p.sampling.repetition_penalty = static_cast<float>(number(*v, "repetition_penalty", 1e-3, 100));
  if (const auto* v = get("seed")) {
    p.sampling.seed = static_cast<uint64_t>(integer(*v, "seed", INT64_MIN, INT64_MAX));
    p.seed_given = true;
  }
  if (const auto* v = get("stop")) p.stop = stops(*v);
  if (const auto* v = get("stream")) p.stream = boolean(*v, "stream");
  if (const auto* v = get("ignore_eos")) p.ignore_eos = boolean(*v, "ignore_eos");
  if (const auto* v = get("stream_options")) {
    if (!v->is_object()) fail("stream_options", "'stream_options' must be an object");
    if (const json::value* u = v->as_object().if_contains("include_usage"))
      p.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (chat) {
    const bool want = get("logprobs") != nullptr && boolean(*get("logprobs"), "logprobs");
    const int64_t top = get("top_logprobs") != nullptr ? integer(*get("top_logprobs"), "top_logprobs", 0, 20) : 0;
    if (top > 0 && !want) fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    p.logprobs = want ? static_cast<int>(top) : -1;
  } else if (const auto* v = get("logprobs")) {
    p.logprobs = static_cast<int>(integer(*v, "logprobs", 0, 20));
  }
}

}  // namespace

std::string client_message(const std::string& message) {
  // Source locations (" [runtime/engine.cpp:88]") and peers' addresses (10.0.0.7:41234, [fe80::1]:80)
  // are for the server log, not for clients.
  static const std::regex kLocation(R"( ?\[[A-Za-z0-9_./-]+\.(cpp|cc|h|hpp|cu|cuh):[0-9]+\])");
  static const std::regex kPeer(R"((\b[0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+(%[A-Za-z0-9]+)?\]):[0-9]{1,5}\b)");
  return std::regex_replace(std::regex_replace(message, kLocation, ""), kPeer, "a peer");
}

std::string ApiError::json() const {
  json::object e;
  e["message"] = client_message(message);
  e["type"] = type;
  e["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  e["code"] = code.empty() ? json::value(nullptr) : json::value(code);
  json::object o;
  o["error"] = std::move(e);
  return json::serialize(o);
}

ApiError bad_request(std::string param, std::string message) {
  ApiError e;
  e.status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

bool parse_generation(const std::string& body, bool chat, GenerationParams& out, ApiError& error) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) {
    error = bad_request("", "the body is not valid JSON: " + ec.message());
    error.code = "invalid_json";
    return false;
  }
  if (!v.is_object()) {
    error = bad_request("", std::string("the body must be a JSON object, got ") + kind_name(v));
    return false;
  }
  try {
    parse_object(v.as_object(), chat, out);
  } catch (const BadField& b) {
    error = bad_request(b.param, b.message);
    return false;
  }
  try {
    out.sampling.validate();
  } catch (const std::exception& e) {
    error = bad_request("", e.what());
    return false;
  }
  return true;
}

}  // namespace strata::launcher::http
