// launcher/http/work_queue.h: a few threads that run request preparation (JSON parsing, tokenization,
// chat templates) off the HTTP I/O threads, so a multi-megabyte prompt never delays /health or other
// connections. Tasks run in arrival order; the destructor finishes the queued ones and joins.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace strata::launcher::http {

class WorkQueue {
 public:
  explicit WorkQueue(int threads);
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;
  // `task` must not throw (exceptions are logged and dropped).
  void post(std::function<void()> task);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace strata::launcher::http
