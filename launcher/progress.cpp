// launcher/progress.cpp: the progress line's thread and the small probes its callers report.
#include "launcher/progress.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace strata::launcher {
namespace {
std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  return buf;
}
}  // namespace

Progress::Progress(std::string what, std::function<std::string()> status, bool enabled,
                   std::chrono::milliseconds quiet)
    : what_(std::move(what)), status_(std::move(status)), tty_(isatty(STDERR_FILENO) == 1), quiet_(quiet) {
  if (enabled) thread_ = std::thread([this] { run(); });
}

Progress::~Progress() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Progress::run() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  if (quiet_.count() > 0 && wake_.wait_for(lock, quiet_, [this] { return stop_; })) return;
  const auto period = tty_ ? std::chrono::seconds(1) : std::chrono::seconds(10);
  while (true) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%s%s: %.0f s, %s%s", tty_ ? "\r" : "", what_.c_str(), seconds, status_().c_str(),
                 tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
    printed_ = true;
    if (wake_.wait_for(lock, period, [this] { return stop_; })) break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (printed_)
    std::fprintf(stderr, "%s%s: done in %.0f s%s", tty_ ? "\r" : "", what_.c_str(), seconds, tty_ ? "\033[K\n" : "\n");
}

bool wants_progress(int64_t bytes) { return isatty(STDERR_FILENO) == 1 || bytes >= (int64_t{2} << 30); }

int64_t path_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return static_cast<int64_t>(fs::file_size(path, ec));
  int64_t total = 0;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  return total;
}

std::string resident_memory() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return "";
  return gib(resident * sysconf(_SC_PAGESIZE)) + " resident";
}

}  // namespace strata::launcher
