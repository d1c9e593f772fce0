// parallel/byte_size.cpp: parsing and printing of memory sizes.
#include "parallel/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace strata::parallel {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "1.5 GiB" into 1.5 and "GiB"; false when the number part is malformed.
bool split_number(std::string_view text, double& number, std::string_view& unit) {
  text = trim(text);
  size_t i = 0;
  bool digits = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    digits = digits || text[i] != '.';
    ++i;
  }
  if (!digits) return false;
  const std::string num(text.substr(0, i));
  if (num.find('.') != num.rfind('.')) return false;  // "1.2.3"
  char* end = nullptr;
  number = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size()) return false;
  unit = trim(text.substr(i));
  return true;
}

}  // namespace

std::optional<int64_t> parse_byte_size(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!split_number(text, number, unit)) return std::nullopt;
  std::string u;
  for (char c : unit) u += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (u.empty() || u == "b") scale = 1;
  else if (u == "kib" || u == "ki") scale = 1024.0;
  else if (u == "mib" || u == "mi") scale = 1024.0 * 1024;
  else if (u == "gib" || u == "gi") scale = 1024.0 * 1024 * 1024;
  else if (u == "tib" || u == "ti") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (u == "kb" || u == "k") scale = 1e3;
  else if (u == "mb" || u == "m") scale = 1e6;
  else if (u == "gb" || u == "g") scale = 1e9;
  else if (u == "tb" || u == "t") scale = 1e12;
  else return std::nullopt;
  const double bytes = number * scale;
  if (!std::isfinite(bytes) || bytes > 9.0e18) return std::nullopt;
  return static_cast<int64_t>(std::llround(bytes));
}

std::optional<double> parse_percent(std::string_view text) {
  text = trim(text);
  if (text.empty() || text.back() != '%') return std::nullopt;
  double number = 0;
  std::string_view unit;
  if (!split_number(text.substr(0, text.size() - 1), number, unit) || !unit.empty()) return std::nullopt;
  if (!(number > 0 && number <= 100)) return std::nullopt;
  return number;
}

std::string format_bytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (unit < 4 && std::fabs(value) >= 1024.0) {
    value /= 1024.0;
    ++unit;
  }
  char buf[48];
  if (unit == 0) std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.2f %s", value, kUnits[unit]);
  return buf;
}

std::string format_bytes_ceil(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB"};
  int unit = 0;
  if (bytes >= (1LL << 30) / 10) unit = 3;
  else if (bytes >= 1024 * 1024) unit = 2;
  else if (bytes >= 1024) unit = 1;
  if (unit == 0) return format_bytes(bytes);
  const double value = std::ceil(static_cast<double>(bytes) / static_cast<double>(1LL << (10 * unit)) * 100.0) / 100.0;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f %s", value, kUnits[unit]);
  return buf;
}

}  // namespace strata::parallel
