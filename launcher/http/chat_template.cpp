// launcher/http/chat_template.cpp: the chat formats, written out the way the models' published
// templates render them (control tokens by id, everything else as plain text).
#include "launcher/http/chat_template.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata::launcher::http {
namespace {

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kLlama3: return "llama3";
    case ChatFormat::kChatMl: return "chatml";
  }
  return "unknown";
}

ChatFormat chat_format_from_name(const std::string& name) {
  if (name == "llama2") return ChatFormat::kLlama2;
  if (name == "llama3") return ChatFormat::kLlama3;
  if (name == "chatml") return ChatFormat::kChatMl;
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown chat template '", name, "'; choose llama2, llama3 or chatml");
}

ChatTemplate ChatTemplate::detect(const Tokenizer& tokenizer) {
  if (tokenizer.token_to_id("<|start_header_id|>") >= 0 && tokenizer.token_to_id("<|eot_id|>") >= 0)
    return ChatTemplate(tokenizer, ChatFormat::kLlama3);
  if (tokenizer.token_to_id("<|im_start|>") >= 0 && tokenizer.token_to_id("<|im_end|>") >= 0)
    return ChatTemplate(tokenizer, ChatFormat::kChatMl);
  return ChatTemplate(tokenizer, ChatFormat::kLlama2);
}

ChatTemplate::ChatTemplate(const Tokenizer& tokenizer, ChatFormat format) : tokenizer_(&tokenizer), format_(format) {
  auto need = [&](const char* piece) {
    const int32_t id = tokenizer.token_to_id(piece);
    STRATA_CHECK(id >= 0, "the ", chat_format_name(format), " chat template needs the token ", piece,
                 ", which this model's vocabulary lacks; pick another with --chat-template");
    return id;
  };
  if (format == ChatFormat::kLlama3) {
    need("<|start_header_id|>");
    need("<|end_header_id|>");
    stop_ids_.push_back(need("<|eot_id|>"));
  } else if (format == ChatFormat::kChatMl) {
    need("<|im_start|>");
    stop_ids_.push_back(need("<|im_end|>"));
  }
}

void ChatTemplate::text(std::vector<int32_t>& out, const std::string& s) const {
  if (s.empty()) return;
  const std::vector<int32_t> ids = tokenizer_->encode(s, /*add_special=*/false, /*parse_special=*/false);
  out.insert(out.end(), ids.begin(), ids.end());
}

void ChatTemplate::special(std::vector<int32_t>& out, const char* piece) const {
  out.push_back(tokenizer_->token_to_id(piece));
}

void ChatTemplate::content(std::vector<int32_t>& out, const std::string& before, const ChatMessage& m, bool stripped,
                           const std::string& after) const {
  size_t begin = 0, end = m.content.size();
  if (stripped) {
    begin = std::min(m.content.find_first_not_of(" \t\r\n"), end);
    end = begin == end ? begin : m.content.find_last_not_of(" \t\r\n") + 1;
  }
  std::string segment = before;
  size_t at = begin;
  for (const ImagePart& image : m.images) {
    STRATA_CHECK(image_token_ >= 0, image.param, ": this model takes no images (it has no image placeholder token)");
    const size_t cut = std::clamp(image.offset, at, end);  // white space stripped around an image goes
    segment += m.content.substr(at, cut - at);
    text(out, segment);
    out.push_back(image_token_);
    segment.clear();
    at = cut;
  }
  text(out, segment + m.content.substr(at, end - at) + after);
}

std::vector<int32_t> ChatTemplate::render(const std::vector<ChatMessage>& messages) const {
  std::vector<int32_t> out;
  const int32_t bos = tokenizer_->bos_id(), eos = tokenizer_->eos_id();
  switch (format_) {
    case ChatFormat::kLlama3:
      if (tokenizer_->token_to_id("<|begin_of_text|>") >= 0) special(out, "<|begin_of_text|>");
      for (const ChatMessage& m : messages) {
        special(out, "<|start_header_id|>");
        text(out, m.role);
        special(out, "<|end_header_id|>");
        content(out, "\n\n", m, true, "");
        special(out, "<|eot_id|>");
      }
      special(out, "<|start_header_id|>");
      text(out, "assistant");
      special(out, "<|end_header_id|>");
      text(out, "\n\n");
      break;
    case ChatFormat::kChatMl:
      if (tokenizer_->data().add_bos && bos >= 0) out.push_back(bos);
      for (const ChatMessage& m : messages) {
        special(out, "<|im_start|>");
        content(out, m.role + "\n", m, false, "");
        special(out, "<|im_end|>");
        text(out, "\n");
      }
      special(out, "<|im_start|>");
      text(out, "assistant\n");
      break;
    case ChatFormat::kLlama2: {
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
      std::string system;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system += (system.empty() ? "" : "\n") + strip(m.content);
        } else if (m.role == "user") {
          if (bos >= 0) out.push_back(bos);
          std::string s = "[INST] ";
          if (!system.empty()) s += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
          system.clear();
          content(out, s, m, true, " [/INST]");
        } else {
          text(out, " " + strip(m.content) + " ");
          if (eos >= 0) out.push_back(eos);
        }
      }
      if (!system.empty()) {  // only a system prompt: it still opens an instruction block
        if (bos >= 0) out.push_back(bos);
        text(out, "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n [/INST]");
      }
      break;
    }
  }
  return out;
}

}  // namespace strata::launcher::http
