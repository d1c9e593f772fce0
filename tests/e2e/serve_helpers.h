// tests/e2e/serve_helpers.h: what the serve tests share besides the HTTP client (serve_client.h): the
// tiny model they serve, OpenAI completion bodies and texts, the single-rank reference answer, and
// /metrics samples.
#pragma once
#include <boost/json.hpp>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "e2e/serve_client.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace strata::test {

// The tiny preset model, made once per test binary in temp_dir(dir)/tiny.
inline std::string tiny_model(const std::string& dir) {
  static const std::string path = [&] {
    const std::string d = temp_dir(dir) + "/tiny";
    const auto r = run_command(strata_binary() + " make-model --preset tiny --out " + d);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return d;
  }();
  return path;
}

inline std::string ids_json(const std::vector<int32_t>& ids) {
  boost::json::array a;
  for (int32_t id : ids) a.push_back(id);
  return boost::json::serialize(a);
}

// A greedy /v1/completions body with a token-id prompt; `extra` is spliced in before the closing brace.
inline std::string completion_body(const std::vector<int32_t>& ids, int max_tokens, bool stream,
                                   const std::string& extra = "") {
  return "{\"prompt\": " + ids_json(ids) + ", \"max_tokens\": " + std::to_string(max_tokens) +
         ", \"temperature\": 0, \"ignore_eos\": true, \"stream\": " + (stream ? "true" : "false") + extra + "}";
}

// The completion text of a response, streamed or not, and its finish reason in `finish`; a "<...>"
// text naming the problem when the answer is malformed.
inline std::string completion_text(const HttpResponse& r, bool stream, std::string* finish = nullptr) {
  namespace json = boost::json;
  if (!stream) {
    const json::value v = r.json();
    if (!v.is_object() || !v.as_object().contains("choices")) return "<bad body: " + r.body + ">";
    const auto& c = v.at("choices").at(0);
    if (finish != nullptr) *finish = json::value_to<std::string>(c.at("finish_reason"));
    return json::value_to<std::string>(c.at("text"));
  }
  const auto events = r.events();
  if (events.empty() || events.back() != "[DONE]") return "<stream without [DONE]: " + r.body + ">";
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json::value v = json::parse(events[i]);
    if (!v.is_object() || !v.as_object().contains("choices")) return "<bad event: " + events[i] + ">";
    const auto& c = v.at("choices").at(0);
    text += json::value_to<std::string>(c.at("text"));
    if (finish != nullptr && !c.at("finish_reason").is_null()) *finish = json::value_to<std::string>(c.at("finish_reason"));
  }
  return text;
}

// The ids single-rank `strata generate --print-ids` continues `prompt` with (n of them).
inline std::vector<int32_t> generated_ids(const std::string& model, const std::vector<int32_t>& prompt, int n) {
  std::string ids_arg;
  for (int32_t id : prompt) ids_arg += std::to_string(id) + " ";
  const auto r = run_command(strata_binary() + " generate --model " + model + " --prompt-ids '" + ids_arg + "' -n " +
                             std::to_string(n) + " --ignore-eos --print-ids --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto p = r.output.find("ids:");
  std::vector<int32_t> ids;
  if (p == std::string::npos) return ids;
  std::istringstream in(r.output.substr(p + 4, r.output.find('\n', p) - p - 4));
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// `ids` decoded the way the server streams a continuation of a prompt ending in `last_prompt_id`.
inline std::string continuation_text(const std::string& model, int32_t last_prompt_id, const std::vector<int32_t>& ids) {
  const auto tokenizer = Tokenizer::create(*open_checkpoint(model)->tokenizer());
  TokenStreamDecoder decoder(*tokenizer);
  decoder.set_previous(last_prompt_id);
  std::string text;
  for (int32_t id : ids) text += decoder.push(id);
  return unicode::sanitize(text + decoder.flush());
}

// What the server must answer for a greedy request of n tokens: the single-rank generation's text.
inline std::string expected_text(const std::string& model, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> ids = generated_ids(model, prompt, n);
  if (static_cast<int>(ids.size()) > n) ids.resize(static_cast<size_t>(n));
  return continuation_text(model, prompt.back(), ids);
}

// A sample of /metrics by name, labels included ("strata_replica_requests_total{replica=\"1\"}"); -1
// when absent.
inline double metric(int port, const std::string& name) {
  const std::string text = http(port, "GET", "/metrics").body;
  const auto p = text.find("\n" + name + " ");
  return p == std::string::npos ? -1 : std::atof(text.c_str() + p + name.size() + 2);
}

}  // namespace strata::test
