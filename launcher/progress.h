// launcher/progress.h: a progress line on stderr while slow work runs (loading or writing a large
// model), so a long silence does not look like a hang. Nothing during the first seconds; then the
// elapsed time and the caller's status, rewritten in place on a terminal and every 10 s otherwise.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace strata::launcher {

class Progress {
 public:
  // `status()` is called from the progress thread: it must only read what is safe to read
  // concurrently (file sizes, /proc). Disabled, it does nothing. Work shorter than `quiet` prints
  // nothing; with no quiet time the first line prints at once.
  Progress(std::string what, std::function<std::string()> status, bool enabled,
           std::chrono::milliseconds quiet = std::chrono::seconds(3));
  ~Progress();  // stops the thread and ends the line when one was printed
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  void run();

  std::string what_;
  std::function<std::string()> status_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool printed_ = false;
  bool tty_ = false;
  std::chrono::milliseconds quiet_;
  std::thread thread_;
};

// Whether a user waits for work on `bytes` long enough to want a progress line: always on a terminal,
// otherwise (logs, pipes) from 2 GiB up.
bool wants_progress(int64_t bytes);
// Bytes under `path`: a file's size, or the sum of a directory's files (0 when absent).
int64_t path_bytes(const std::string& path);
// "3.1 GiB resident": this process's resident memory, for a loading model's status.
std::string resident_memory();

}  // namespace strata::launcher
