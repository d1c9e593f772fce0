// offload/disk_reader.cpp: pread / O_DIRECT reads of checkpoint files and the "is it still the
// file we loaded" check (the same three conditions as runtime/formats/mapped_file.cpp, on our own
// descriptor: the mapping's is private to the Checkpoint).
#include "offload/disk_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::offload {

CheckpointFile::CheckpointFile(const std::string& path, uint64_t min_size, DiskIo io) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot open checkpoint file '", path, "' for the disk tier: ", std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    release();
    STRATA_THROW(ErrorKind::kIo, "cannot stat '", path, "': ", std::strerror(err));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  device_ = st.st_dev;
  inode_ = st.st_ino;
  if (size_ < min_size) {
    release();
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path, "' has ", st.st_size, " bytes but its tensors end at byte ",
                 min_size, "; it was truncated after it was opened. Restore it and restart");
  }
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint: larger readahead for buffered reads
  // kAuto: a file that fits in half the RAM stays in the page cache after the first pass, and a
  // cached read beats any disk; a larger one would thrash the cache, so it streams with O_DIRECT.
  const uint64_t ram = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (io == DiskIo::kDirect || (io == DiskIo::kAuto && size_ > ram / 2)) {
    direct_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (direct_fd_ < 0) {
      const int err = errno;
      if (io == DiskIo::kDirect) {
        release();
        STRATA_THROW(ErrorKind::kConfig, "the file system of '", path, "' refuses O_DIRECT (", std::strerror(err),
                     "); use --disk-io auto or buffered");
      }
      LOG_DEBUG("O_DIRECT unavailable for ", path, " (", std::strerror(err), "); the disk tier reads through the page cache");
    }
  }
}

CheckpointFile::~CheckpointFile() { release(); }

CheckpointFile::CheckpointFile(CheckpointFile&& o) noexcept
    : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), direct_fd_(std::exchange(o.direct_fd_, -1)),
      size_(o.size_), device_(o.device_), inode_(o.inode_) {}

CheckpointFile& CheckpointFile::operator=(CheckpointFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    direct_fd_ = std::exchange(o.direct_fd_, -1);
    size_ = o.size_, device_ = o.device_, inode_ = o.inode_;
  }
  return *this;
}

void CheckpointFile::release() noexcept {
  if (fd_ >= 0) ::close(fd_);
  if (direct_fd_ >= 0) ::close(direct_fd_);
  fd_ = direct_fd_ = -1;
}

void CheckpointFile::check_intact() const {
  // A sealed in-memory file (layers strata transcodes, runtime/formats/mapped_file.h) cannot change size and
  // has no link on disk to lose; only strata writes it, each range before anything reads it.
  constexpr int kSealed = F_SEAL_SHRINK | F_SEAL_GROW;
  if (const int seals = ::fcntl(fd_, F_GET_SEALS); seals >= 0 && (seals & kSealed) == kSealed) return;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot stat checkpoint file '", path_, "': ", std::strerror(err));
  }
  if (static_cast<uint64_t>(st.st_size) != size_)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_, "' changed size while the disk tier streams from it (",
                 size_, " -> ", st.st_size, " bytes); it was truncated or rewritten. Restore the file and restart");
  if (st.st_nlink == 0)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_,
                 "' was deleted while the disk tier streams from it; restore it and restart");
  struct stat by_path {};
  if (::stat(path_.c_str(), &by_path) != 0 || by_path.st_dev != device_ || by_path.st_ino != inode_)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_,
                 "' was replaced or moved while the disk tier streams from it; restart to load the new file");
}

void CheckpointFile::short_read(uint64_t offset, int64_t bytes, int64_t got, const std::string& tensor) const {
  STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_, "' ended early: reading tensor '", tensor, "' (bytes [",
               offset, ", ", offset + static_cast<uint64_t>(bytes), ")) returned ", got,
               " bytes; the file shrank after loading. Restore it and restart");
}

void CheckpointFile::read(uint64_t offset, int64_t bytes, uint8_t* dst, bool aligned_room,
                          const std::string& tensor) const {
  if (direct_fd_ >= 0 && aligned_room && bytes >= kDirectMinBytes) {
    const uint64_t lead = offset % kDirectAlign;
    const uint64_t start = offset - lead;
    const uint64_t want = lead + static_cast<uint64_t>(bytes);
    const uint64_t span = (want + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    uint8_t* base = dst - lead;
    uint64_t done = 0;
    while (done < want) {
      const ssize_t n = ::pread(direct_fd_, base + done, span - done, static_cast<off_t>(start + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EINVAL && done == 0) break;  // this range refuses O_DIRECT: buffered below
      if (n < 0) {
        const int err = errno;
        STRATA_THROW(ErrorKind::kIo, "read of tensor '", tensor, "' from '", path_, "' failed: ", std::strerror(err));
      }
      if (n == 0) short_read(offset, bytes, static_cast<int64_t>(done > lead ? done - lead : 0), tensor);
      done += static_cast<uint64_t>(n);
    }
    if (done >= want) return;
  }
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd_, dst + done, static_cast<size_t>(bytes - done), static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      STRATA_THROW(ErrorKind::kIo, "read of tensor '", tensor, "' from '", path_, "' failed: ", std::strerror(err));
    }
    if (n == 0) short_read(offset, bytes, done, tensor);
    done += n;
  }
}

}  // namespace strata::offload
