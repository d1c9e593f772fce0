// runtime/tokenizer/unicode.cpp: UTF-8 decoding and the whitespace class; the letter and number
// tables live in unicode_tables.cpp.
#include "runtime/tokenizer/unicode.h"

namespace strata::unicode {

namespace {
bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Expected length from the lead byte; 0 for bytes that cannot start a sequence.
size_t expected_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether the second byte is allowed after this lead byte (rules out overlongs, surrogates, > U+10FFFF).
bool second_byte_ok(unsigned char lead, unsigned char second) {
  if (!is_continuation(second)) return false;
  if (lead == 0xE0) return second >= 0xA0;
  if (lead == 0xED) return second <= 0x9F;
  if (lead == 0xF0) return second >= 0x90;
  if (lead == 0xF4) return second <= 0x8F;
  return true;
}
}  // namespace

uint32_t decode(std::string_view text, size_t pos, size_t* length) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  *length = 1;
  const size_t n = expected_length(lead);
  if (n == 1) return lead;
  if (n == 0 || pos + n > text.size()) return kInvalid;
  if (!second_byte_ok(lead, static_cast<unsigned char>(text[pos + 1]))) return kInvalid;
  for (size_t i = 2; i < n; ++i)
    if (!is_continuation(static_cast<unsigned char>(text[pos + i]))) return kInvalid;
  uint32_t cp = lead & (0xFF >> (n + 1));
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  *length = n;
  return cp;
}

size_t char_length(std::string_view text, size_t pos) {
  size_t length = 1;
  decode(text, pos, &length);
  return length;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

size_t complete_prefix_length(std::string_view bytes) {
  // Only the last three bytes can belong to an unfinished sequence.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if (is_continuation(c)) continue;
    const size_t need = expected_length(c);
    if (need <= back) return n;  // ASCII, invalid lead, or a sequence that is already complete
    // A lead byte whose sequence is cut off: hold it back only if what follows it is still valid.
    if (back >= 2 && !second_byte_ok(c, static_cast<unsigned char>(bytes[n - back + 1]))) return n;
    return n - back;
  }
  return n;
}

std::string sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    size_t length = 1;
    if (decode(bytes, pos, &length) == kInvalid) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(bytes.substr(pos, length));
    }
    pos += length;
  }
  return out;
}

}  // namespace strata::unicode
