// launcher/cmd_bench_disk.cpp: `strata bench disk --file F`: the sequential read rate of a file (the disk
// tier's ceiling) with several reads in flight. dd with iflag=direct keeps one synchronous read at a time
// (queue depth 1), which on virtual and NVMe disks is far below what the device serves with several
// requests queued; the disk tier keeps several aligned O_DIRECT reads in flight, so its ceiling must too.
// Each thread reads its own contiguous stretch of the file in large aligned blocks; the rate of every
// thread count asked for is printed, and the best is the ceiling. Prints one JSON object.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "launcher/args.h"
#include "runtime/error.h"

namespace strata::launcher {
namespace {

constexpr size_t kAlign = 4096;  // O_DIRECT: buffer, offset and length aligned to the logical block

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Reads [begin, end) of `fd` in `block`-byte reads; returns the bytes read. Throws on a read error.
uint64_t read_range(int fd, uint64_t begin, uint64_t end, size_t block, const std::string& path, bool direct) {
  std::unique_ptr<void, FreeDeleter> buf(std::aligned_alloc(kAlign, block));
  STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, buf != nullptr, "bench disk: cannot allocate a ", block, "-byte buffer");
  uint64_t done = 0;
  for (uint64_t off = begin; off < end;) {
    // The last read of the file may be short; O_DIRECT still wants an aligned length, and pread returns
    // what the file has.
    const size_t want = static_cast<size_t>(std::min<uint64_t>(block, (end - off + kAlign - 1) / kAlign * kAlign));
    const ssize_t got = ::pread(fd, buf.get(), want, static_cast<off_t>(off));
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      STRATA_THROW(ErrorKind::kIo, "bench disk: reading '", path, "' at byte ", off, direct ? " with O_DIRECT" : "", ": ",
                   std::strerror(err), direct && err == EINVAL ? " (the file system refuses O_DIRECT; try --buffered)" : "");
    }
    if (got == 0) break;  // end of file
    const uint64_t used = std::min<uint64_t>(static_cast<uint64_t>(got), end - off);
    done += used;
    off += used;
  }
  return done;
}

std::vector<int> parse_threads(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* stop = nullptr;
    const long v = std::strtol(item.c_str(), &stop, 10);
    STRATA_CHECK(!item.empty() && *stop == '\0' && v >= 1 && v <= 256, "--threads takes numbers 1..256 separated by ",
                 "commas, e.g. 1,4,16; got '", text, "'");
    out.push_back(static_cast<int>(v));
  }
  STRATA_CHECK(!out.empty(), "--threads is empty");
  return out;
}

}  // namespace

int cmd_bench_disk(int argc, char** argv) {
  const Args args("bench disk", {{"file", true, "the file to read (e.g. the checkpoint's .safetensors)"},
                                 {"threads", true, "reads in flight, comma-separated (default 1,4,16)"},
                                 {"block-mib", true, "bytes per read, MiB (default 8)"},
                                 {"buffered", false, "read through the page cache instead of O_DIRECT"}},
                  argc, argv, 3);
  const std::string path = args.required("file");
  const std::vector<int> threads = parse_threads(args.str("threads", "1,4,16"));
  const size_t block = static_cast<size_t>(args.integer("block-mib", 8, 1, 1024)) << 20;
  const bool direct = !args.has("buffered");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
  if (fd < 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "bench disk: cannot open '", path, "'", direct ? " with O_DIRECT" : "", ": ",
                 std::strerror(err), direct && err == EINVAL ? " (the file system refuses O_DIRECT; try --buffered)" : "");
  }
  struct stat st {};
  ::fstat(fd, &st);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::string runs;
  double best = 0;
  for (int n : threads) {
    if (!direct) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // best effort: start from a cold cache
    // Stretches start on block boundaries so every read stays aligned.
    const uint64_t stretch = (size / static_cast<uint64_t>(n) + block - 1) / block * block;
    std::atomic<uint64_t> bytes{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int i = 0; i < n; ++i) {
      pool.emplace_back([&, i] {
        try {
          const uint64_t b = std::min(size, stretch * static_cast<uint64_t>(i));
          bytes += read_range(fd, b, std::min(size, b + stretch), block, path, direct);
        } catch (...) {
          errors[static_cast<size_t>(i)] = std::current_exception();
        }
      });
    }
    for (std::thread& t : pool) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const std::exception_ptr& e : errors)
      if (e) {
        ::close(fd);
        std::rethrow_exception(e);
      }
    STRATA_CHECK_KIND(ErrorKind::kIo, bytes.load() == size, "bench disk: read ", bytes.load(), " of ", size,
                      " bytes of '", path, "'; the file changed while it was read");
    const double gbs = s > 0 ? static_cast<double>(size) / s / 1e9 : 0;
    best = std::max(best, gbs);
    char row[160];
    std::snprintf(row, sizeof row, "%s{\"threads\": %d, \"seconds\": %.4f, \"gbs\": %.3f}", runs.empty() ? "" : ", ", n,
                  s, gbs);
    runs += row;
  }
  ::close(fd);
  std::printf("{\"file\": \"%s\", \"bytes\": %llu, \"block_bytes\": %zu, \"direct\": %s, \"runs\": [%s], "
              "\"best_gbs\": %.3f}\n",
              path.c_str(), static_cast<unsigned long long>(size), block, direct ? "true" : "false", runs.c_str(), best);
  return 0;
}

}  // namespace strata::launcher
