// runtime/log.h: the one logger (the only global mutable state). Every line carries the rank prefix
// set by the launcher, e.g. "[r3/8 tp1 pp0 node07] W offload/prefetcher.cpp:57 ...".
// INFO prints from rank 0 only unless STRATA_LOG_RANKS=all; WARN and ERROR print from every rank.
#pragma once
#include <string>

#include "runtime/error.h"

namespace strata::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_rank_prefix(const std::string& prefix, bool is_rank0);
void set_level(Level level);
// INFO and DEBUG from every rank, not only rank 0 (--verbose, STRATA_LOG_RANKS=all).
void set_all_ranks(bool all);
bool enabled(Level level);
void write(Level level, const char* file, int line, const std::string& message);

}  // namespace strata::log

#define STRATA_LOG(level, ...)                                                               \
  do {                                                                                       \
    if (::strata::log::enabled(level))                                                       \
      ::strata::log::write((level), __FILE__, __LINE__, ::strata::cat(__VA_ARGS__));         \
  } while (0)
#define LOG_DEBUG(...) STRATA_LOG(::strata::log::Level::kDebug, __VA_ARGS__)
#define LOG_INFO(...) STRATA_LOG(::strata::log::Level::kInfo, __VA_ARGS__)
#define LOG_WARN(...) STRATA_LOG(::strata::log::Level::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) STRATA_LOG(::strata::log::Level::kError, __VA_ARGS__)
