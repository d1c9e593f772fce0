// runtime/log.cpp: rank-prefixed logging to stderr, one mutex-guarded line at a time.
#include "runtime/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace strata::log {
namespace {
struct State {
  std::mutex mutex;
  std::string prefix = "[r0/1]";
  bool is_rank0 = true;
  bool all_ranks = false;
  Level level = Level::kInfo;
  State() {
    if (const char* env = std::getenv("STRATA_LOG_LEVEL")) {
      if (!std::strcmp(env, "debug")) level = Level::kDebug;
      else if (!std::strcmp(env, "warn")) level = Level::kWarn;
      else if (!std::strcmp(env, "error")) level = Level::kError;
    }
    if (const char* env = std::getenv("STRATA_LOG_RANKS")) all_ranks = !std::strcmp(env, "all");
  }
};
State& state() {
  static State s;
  return s;
}
const char* short_path(const char* file) {
  for (const char* root : {"/runtime/", "/parallel/", "/comm/", "/offload/", "/launcher/", "/tests/"}) {
    const char* hit = std::strstr(file, root);
    if (hit != nullptr) return hit + 1;
  }
  return file;
}
}  // namespace

void set_rank_prefix(const std::string& prefix, bool is_rank0) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().prefix = prefix;
  state().is_rank0 = is_rank0;
}

void set_level(Level level) { state().level = level; }

void set_all_ranks(bool all) { state().all_ranks = all; }

bool enabled(Level level) {
  const State& s = state();
  if (level < s.level) return false;
  if (level >= Level::kWarn) return true;
  return s.is_rank0 || s.all_ranks;
}

void write(Level level, const char* file, int line, const std::string& message) {
  static const char kTag[] = {'D', 'I', 'W', 'E'};
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::fprintf(stderr, "%s %c %s:%d %s\n", s.prefix.c_str(), kTag[static_cast<int>(level)], short_path(file), line,
               message.c_str());
}

}  // namespace strata::log
