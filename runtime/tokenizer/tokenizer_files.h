// runtime/tokenizer/tokenizer_files.h: readers (and one writer) of tokenizer files into TokenizerData.
// Each reader validates what it reads and throws strata::Error (kFormat) naming the file and the
// field on malformed input.
#pragma once
#include <string>
#include <string_view>

#include "runtime/tokenizer/tokenizer_data.h"

namespace strata {

// Hugging Face tokenizer.json (BPE model: SentencePiece-style with byte_fallback, or byte-level);
// `config_path` (tokenizer_config.json, may be empty) supplies add_bos/add_eos and special tokens.
TokenizerData load_tokenizer_json(const std::string& path, const std::string& config_path = "");
// SentencePiece tokenizer.model (protobuf ModelProto).
TokenizerData load_sentencepiece_model(const std::string& path);
// llama2.c tokenizer.bin (max_token_length, then score/len/bytes per token).
TokenizerData load_llama2c_tokenizer(const std::string& path, int64_t vocab_size);

// Writes `data` as a Hugging Face tokenizer.json that `tokenizers` loads (used by make-model).
void write_tokenizer_json(const TokenizerData& data, const std::string& path);
// A deterministic SentencePiece-style vocabulary of exactly `vocab_size` tokens (<unk>, <s>, </s>,
// 256 byte-fallback tokens, then merged pieces), for random-weight models made by make-model.
TokenizerData make_synthetic_tokenizer(int64_t vocab_size);

// The same readers on bytes already in memory (fuzzing, embedded files); `name` stands for the file in
// error messages. `config_text` may be empty. load_llama2c_tokenizer and this accept vocab_size <= 0
// for "as many tokens as the file holds".
TokenizerData parse_tokenizer_json(std::string_view json_text, const std::string& name,
                                   std::string_view config_text = {}, const std::string& config_name = {});
TokenizerData parse_sentencepiece_model(std::string_view bytes, const std::string& name);
TokenizerData parse_llama2c_tokenizer(std::string_view bytes, int64_t vocab_size, const std::string& name);
// The JSON text write_tokenizer_json writes.
std::string tokenizer_json_text(const TokenizerData& data);

}  // namespace strata
