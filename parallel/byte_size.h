// parallel/byte_size.h: memory sizes as people write them in plans ("6GiB", "512 MB", "40%") and as
// reports print them. Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones powers of 1000.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace strata::parallel {

// "6GiB", "6 GiB", "1.5GiB", "512MB", "1024" (bytes), "64KiB"; nullopt when not a size.
std::optional<int64_t> parse_byte_size(std::string_view text);
// "40%", "12.5 %" -> the number in (0, 100]; nullopt when not a percentage in range.
std::optional<double> parse_percent(std::string_view text);
// 1536 MiB -> "1.50 GiB"; picks the largest binary unit that keeps the number >= 1.
std::string format_bytes(int64_t bytes);
// Rounded up (never down) to 0.01 of the unit, for "raise it to at least N" messages that must be
// enough: GiB from 0.1 GiB up ("3.17 GiB"), else the unit format_bytes picks ("417.75 KiB").
std::string format_bytes_ceil(int64_t bytes);

}  // namespace strata::parallel
