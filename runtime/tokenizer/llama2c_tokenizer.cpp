// runtime/tokenizer/llama2c_tokenizer.cpp: reads llama2.c tokenizer.bin (int32 max_token_length, then
// per token: float32 score, int32 length, bytes). The file stores spaces as ' ' and BOS/EOS as
// "\n<s>\n"/"\n</s>\n"; TokenizerData gets the usual U+2581 and "<s>"/"</s>" spelling.
#include <cctype>
#include <cstdint>
#include <cstring>

#include "runtime/error.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {

namespace {
constexpr int32_t kMaxPieceBytes = 1 << 16;  // llama2.c's buffers are sized from max_token_length

bool is_byte_piece(const std::string& p) {
  return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' && std::isxdigit(static_cast<unsigned char>(p[3])) &&
         std::isxdigit(static_cast<unsigned char>(p[4]));
}
}  // namespace

TokenizerData parse_llama2c_tokenizer(std::string_view bytes, int64_t vocab_size, const std::string& name) {
  size_t pos = 0;
  auto bad = [&](const std::string& what) {
    STRATA_THROW(ErrorKind::kFormat, name, ": malformed llama2.c tokenizer at byte ", pos, ": ", what);
  };
  auto read = [&](void* out, size_t n, const char* what, size_t id) {
    if (bytes.size() - pos < n)
      bad(cat("truncated ", what, id == SIZE_MAX ? std::string() : cat(" of token ", id), " (needs ", n, " bytes, ",
              bytes.size() - pos, " left)"));
    std::memcpy(out, bytes.data() + pos, n);
    pos += n;
  };
  int32_t max_token_length = 0;
  read(&max_token_length, 4, "max_token_length", SIZE_MAX);
  if (max_token_length <= 0 || max_token_length > kMaxPieceBytes)
    bad(cat("max_token_length ", max_token_length, " is not in [1, ", kMaxPieceBytes, "]"));

  TokenizerData data;
  data.kind = TokenizerKind::kSentencePiece;
  const bool until_end = vocab_size <= 0;
  if (!until_end) {
    // Each token takes at least 8 bytes: a size no file could hold is a wrong argument or a bad file.
    if (vocab_size > static_cast<int64_t>(bytes.size() / 8) + 1)
      bad(cat("expected ", vocab_size, " tokens but the file has only ", bytes.size(), " bytes"));
    data.tokens.reserve(static_cast<size_t>(vocab_size));
  }
  while (until_end ? pos < bytes.size() : static_cast<int64_t>(data.tokens.size()) < vocab_size) {
    const size_t id = data.tokens.size();
    float score;
    int32_t length;
    read(&score, 4, "score", id);
    read(&length, 4, "length", id);
    if (length < 0 || length > max_token_length)
      bad(cat("token ", id, " has length ", length, " outside [0, max_token_length=", max_token_length, "]"));
    std::string piece(static_cast<size_t>(length), '\0');
    read(piece.data(), piece.size(), "bytes", id);
    data.tokens.push_back(std::move(piece));
    data.scores.push_back(score);
  }
  if (pos != bytes.size())
    bad(cat(bytes.size() - pos, " bytes left after ", vocab_size, " tokens; is vocab_size right?"));
  if (data.tokens.size() < 3) bad(cat("only ", data.tokens.size(), " tokens; llama2.c needs <unk>, <s>, </s>"));

  data.types.assign(data.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (size_t id = 0; id < data.tokens.size(); ++id) {
    std::string& p = data.tokens[id];
    if (is_byte_piece(p)) {
      data.types[id] = static_cast<int32_t>(TokenType::kByte);
      continue;
    }
    std::string spelled;  // ' ' -> U+2581, as SentencePiece and GGUF store it
    for (char c : p) spelled += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
    p = std::move(spelled);
  }
  data.tokens[0] = "<unk>";
  data.tokens[1] = "<s>";
  data.tokens[2] = "</s>";
  data.types[0] = static_cast<int32_t>(TokenType::kUnknown);
  data.types[1] = data.types[2] = static_cast<int32_t>(TokenType::kControl);
  data.unk_id = 0;
  data.bos_id = 1;
  data.eos_id = 2;
  data.add_bos = true;
  data.add_space_prefix = true;
  data.space_prefix_rule = SpacePrefixRule::kAlways;
  data.llama2c_decode = true;
  return data;
}

TokenizerData load_llama2c_tokenizer(const std::string& path, int64_t vocab_size) {
  return parse_llama2c_tokenizer(read_file_bytes(path, "llama2.c tokenizer"), vocab_size, path);
}

}  // namespace strata
