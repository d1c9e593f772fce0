// launcher/http/openai_schema.h: the OpenAI request bodies (completions, chat completions) parsed
// and validated into plain structs, and the error body. Validation returns an ApiError naming the
// field instead of throwing: a bad request is an expected outcome. No Beast here.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/sampler.h"

namespace strata::launcher::http {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
  std::string json() const;
};

ApiError bad_request(std::string param, std::string message);

// `message` without what only the server log should show: source locations and peers' IP:port.
std::string client_message(const std::string& message);

struct PromptInput {  // one prompt: text, or token ids
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

// An image content part ({"type": "image_url", "image_url": {"url": ...}}) of a user message: it stands
// at byte `offset` of the message's text, where the chat template puts the model's image placeholder.
struct ImagePart {
  std::string url;    // data:image/...;base64,..., a file path or file:// URL, or http(s) (refused)
  size_t offset = 0;  // into ChatMessage::content
  std::string param;  // the field, for errors: messages[i].content[j]
};

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;  // the text parts, joined
  std::vector<ImagePart> images = {};  // user messages only, in order
};

struct GenerationParams {
  bool chat = false;
  std::string model;
  std::vector<PromptInput> prompts;   // completions: one or a batch
  std::vector<ChatMessage> messages;  // chat
  int64_t max_tokens = -1;            // -1: the endpoint's default
  SamplingParams sampling;            // fields the request leaves out keep what the caller set
  bool seed_given = false;            // false: the server draws a fresh seed
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // extension (vLLM's name): generate past end-of-sequence tokens
  int logprobs = -1;           // -1: off; else alternatives per token (completions: logprobs; chat: top_logprobs)
};

// Parses a request body into `out`, whose sampling fields hold the server's defaults beforehand. On
// failure returns false and fills `error` (status 400, param named).
bool parse_generation(const std::string& body, bool chat, GenerationParams& out, ApiError& error);

}  // namespace strata::launcher::http
