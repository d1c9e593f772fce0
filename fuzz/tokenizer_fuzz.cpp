// fuzz/tokenizer_fuzz.cpp: libFuzzer target for the tokenizers. The first input byte picks what to
// exercise: encode/decode/streaming of fixed in-process tokenizers, or a file reader on the rest.
// Readers may throw strata::Error on bad input; anything else (crash, other exception, mismatch) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/error.h"
#include "runtime/tokenizer/byte_bpe_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace {

const strata::Tokenizer& sentencepiece() {
  static const auto tok = strata::Tokenizer::create(strata::make_synthetic_tokenizer(512));
  return *tok;
}

// A byte-level tokenizer built in memory: the 256 byte-alphabet pieces plus a few merges exercise the
// same code as a trained vocabulary.
const strata::Tokenizer& byte_level(int family) {
  static std::unique_ptr<strata::Tokenizer> toks[3];
  if (!toks[family]) {
    strata::TokenizerData data;
    data.kind = strata::TokenizerKind::kByteBpe;
    data.pre_tokenizer = family == 0 ? "gpt2" : family == 1 ? "llama3" : "qwen2";
    for (int b = 0; b < 256; ++b) data.tokens.push_back(strata::byte_level_char(static_cast<unsigned char>(b)));
    for (const char* m : {"t h", "th e", "\xC4\xA0 t", "\xC4\xA0t he", "a n", "an d"}) {
      std::string merge = m;
      data.merges.push_back(merge);
      data.tokens.push_back(merge.substr(0, merge.find(' ')) + merge.substr(merge.find(' ') + 1));
    }
    data.tokens.push_back("<|im_start|>");
    data.types.assign(data.tokens.size(), static_cast<int32_t>(strata::TokenType::kNormal));
    data.types.back() = static_cast<int32_t>(strata::TokenType::kControl);
    data.add_bos = false;
    toks[family] = strata::Tokenizer::create(data);
  }
  return *toks[family];
}

void round_trip(const strata::Tokenizer& tok, std::string_view text, bool exact) {
  const auto ids = tok.encode(text, true, true);
  const std::string decoded = tok.decode(ids);
  strata::TokenStreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != decoded) std::abort();
  // Without special-token parsing byte-level BPE reproduces any input exactly.
  if (exact && tok.decode(tok.encode(text, false, false)) != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 7) {
      case 0: round_trip(sentencepiece(), rest, false); break;
      case 1: round_trip(byte_level(0), rest, true); break;
      case 2: round_trip(byte_level(1), rest, true); break;
      case 3: round_trip(byte_level(2), rest, true); break;
      case 4: strata::Tokenizer::create(strata::parse_tokenizer_json(rest, "fuzz.json")); break;
      case 5: strata::Tokenizer::create(strata::parse_sentencepiece_model(rest, "fuzz.model")); break;
      case 6: strata::Tokenizer::create(strata::parse_llama2c_tokenizer(rest, data[0] % 2 ? 0 : 300, "fuzz.bin")); break;
    }
  } catch (const strata::Error&) {
    // Malformed input is expected to be rejected this way.
  }
  return 0;
}
