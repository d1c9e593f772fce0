// runtime/tokenizer/unicode.h: the little Unicode the tokenizers need: lenient UTF-8 decoding, code
// point classes for the split regexes (\p{L}, \p{N}, \s), and UTF-8 completeness checks for streaming.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata::unicode {

// A code point that no valid UTF-8 decodes to: what decode() returns for an invalid byte.
inline constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes the code point starting at text[pos] and sets *length to its byte count (>= 1). An invalid,
// overlong or truncated sequence decodes as kInvalid with length 1, so every input byte is consumed
// exactly once and byte-level tokenizers still round-trip arbitrary bytes.
uint32_t decode(std::string_view text, size_t pos, size_t* length);
// Byte length of a valid sequence starting at `pos`, 1 for an invalid byte.
size_t char_length(std::string_view text, size_t pos);
void append_utf8(std::string& out, uint32_t cp);

// General category L* (all planes; tables from Unicode 14, see unicode_tables.cpp).
bool is_letter(uint32_t cp);
// General category N* (Nd, Nl, No).
bool is_number(uint32_t cp);
// The White_Space property, which is what \s means in the Oniguruma regexes Hugging Face runs.
bool is_whitespace(uint32_t cp);

// Length of the longest prefix of `bytes` that ends on a complete UTF-8 sequence boundary: bytes after
// it are the start of a sequence that more bytes could still complete. Invalid bytes count as complete.
size_t complete_prefix_length(std::string_view bytes);
// Replaces every invalid byte with U+FFFD so the result is valid UTF-8 (for JSON output).
std::string sanitize(std::string_view bytes);

}  // namespace strata::unicode
