// launcher/http/chat_template.h: renders chat messages into prompt token ids for the three prompt
// formats in common use (Llama-2 [INST], Llama-3 header ids, ChatML), chosen from the tokenizer's
// vocabulary. Message content is encoded with parse_special=false, so a user who writes
// "<|im_end|>" gets those characters, never the control token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "launcher/http/openai_schema.h"
#include "runtime/tokenizer/tokenizer.h"

namespace strata::launcher::http {

enum class ChatFormat { kLlama2, kLlama3, kChatMl };
const char* chat_format_name(ChatFormat format);
// "llama2" | "llama3" | "chatml"; throws kInvalidArgument naming the choices otherwise.
ChatFormat chat_format_from_name(const std::string& name);

class ChatTemplate {
 public:
  // Llama-3 when the vocabulary has <|start_header_id|> and <|eot_id|>, ChatML when it has
  // <|im_start|> and <|im_end|>, else Llama-2 (plain text around BOS/EOS, works with any vocabulary).
  static ChatTemplate detect(const Tokenizer& tokenizer);
  ChatTemplate(const Tokenizer& tokenizer, ChatFormat format);

  ChatFormat format() const { return format_; }
  // A vision-language model's image placeholder: each image part of a message renders as this id at the
  // part's place in the text (one per image; the caller expands it to one per image feature).
  void set_image_token(int32_t id) { image_token_ = id; }
  // The prompt ids, ending where the assistant's reply begins. Throws kInvalidArgument for image parts
  // when no image token is set.
  std::vector<int32_t> render(const std::vector<ChatMessage>& messages) const;
  // Ids that end the assistant's turn besides the model's EOS (<|eot_id|>, <|im_end|>).
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  void text(std::vector<int32_t>& out, const std::string& s) const;
  void special(std::vector<int32_t>& out, const char* piece) const;
  // `before`, the message's text (stripped of surrounding white space when `stripped`) with the image
  // placeholder at each image part, then `after`.
  void content(std::vector<int32_t>& out, const std::string& before, const ChatMessage& m, bool stripped,
               const std::string& after) const;

  const Tokenizer* tokenizer_;
  ChatFormat format_;
  std::vector<int32_t> stop_ids_;
  int32_t image_token_ = -1;
};

}  // namespace strata::launcher::http
