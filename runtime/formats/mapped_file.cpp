// runtime/formats/mapped_file.cpp: mmap/munmap and the "is the file still what we mapped" check.
#include "runtime/formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata {

MappedFile::MappedFile(const std::string& path) : MappedFile(path, false) {}

MappedFile::MappedFile(const std::string& path, bool shared) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot open '", path, "': ", std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    release();
    STRATA_THROW(ErrorKind::kIo, "cannot stat '", path, "': ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    release();
    STRATA_THROW(ErrorKind::kIo, "'", path, "' is not a regular file; expected a checkpoint file");
  }
  size_ = static_cast<size_t>(st.st_size);
  device_ = st.st_dev;
  inode_ = st.st_ino;
  if (size_ == 0) return;  // mmap rejects length 0; an empty file maps to nothing
  void* p = ::mmap(nullptr, size_, PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, fd_, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    release();
    STRATA_THROW(ErrorKind::kIo, "cannot mmap '", path, "' (", st.st_size, " bytes): ", std::strerror(err));
  }
  data_ = static_cast<const uint8_t*>(p);
}

MappedFile MappedFile::in_memory(const std::string& label, uint64_t size) {
  const int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot create the in-memory file '", label, "': ", std::strerror(err));
  }
  // A sparse file: pages exist once written. Sealed against shrinking and growing, so no reader (the offload
  // disk tier either) can meet a file shorter than its mapping although it has no name on disk.
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    const int err = errno;
    ::close(fd);
    STRATA_THROW(ErrorKind::kIo, "cannot size and seal the in-memory file '", label, "' (", size, " bytes): ",
                 std::strerror(err));
  }
  try {
    MappedFile file("/proc/self/fd/" + std::to_string(fd), true);
    file.memfd_ = fd;
    return file;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

void MappedFile::fill(uint64_t offset, size_t n, const std::function<void(uint8_t*)>& fill) const {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  STRATA_CHECK_KIND(ErrorKind::kInternal, memfd_ >= 0 && offset % page == 0 && offset <= size_ && n <= size_ - offset,
                    "fill of ", n, " bytes at ", offset, " in '", path_, "' (", size_,
                    " bytes), which is not a fitting in-memory file and page-aligned range");
  if (n == 0) return;
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot map bytes [", offset, ", ", offset + n, ") of the in-memory file '", path_,
                 "' for writing: ", std::strerror(err));
  }
  try {
    fill(static_cast<uint8_t*>(p));
  } catch (...) {
    ::munmap(p, n);
    discard(offset, std::min<uint64_t>(size_ - offset, (n + page - 1) / page * page));
    throw;
  }
  ::munmap(p, n);
}

void MappedFile::discard(uint64_t offset, uint64_t n) const {
  STRATA_CHECK_KIND(ErrorKind::kInternal, memfd_ >= 0 && offset <= size_ && n <= size_ - offset, "discard of ", n,
                    " bytes at ", offset, " in '", path_, "' (", size_, " bytes), which is not a fitting in-memory file");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (offset + page - 1) / page * page, end = (offset + n) / page * page;
  if (end <= begin) return;
  if (::fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(begin),
                  static_cast<off_t>(end - begin)) != 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot release bytes [", begin, ", ", end, ") of the in-memory file '", path_,
                 "': ", std::strerror(err));
  }
}

uint64_t MappedFile::allocated_bytes() const {
  if (memfd_ < 0) return size_;
  struct stat st {};
  if (::fstat(memfd_, &st) != 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot stat the in-memory file '", path_, "': ", std::strerror(err));
  }
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      memfd_(std::exchange(other.memfd_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      device_(other.device_),
      inode_(other.inode_) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    memfd_ = std::exchange(other.memfd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    device_ = other.device_;
    inode_ = other.inode_;
  }
  return *this;
}

void MappedFile::release() noexcept {
  if (data_ != nullptr && ::munmap(const_cast<uint8_t*>(data_), size_) != 0)
    LOG_WARN("munmap of '", path_, "' failed: ", std::strerror(errno));
  data_ = nullptr;
  size_ = 0;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (memfd_ >= 0) ::close(memfd_);
  memfd_ = -1;
}

void MappedFile::check_intact() const {
  STRATA_CHECK_KIND(ErrorKind::kInternal, fd_ >= 0, "check_intact on an empty (moved-from) MappedFile");
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot stat mapped checkpoint '", path_, "': ", std::strerror(err));
  }
  if (memfd_ >= 0) return;  // sealed in memory: nothing can shrink, delete or replace it
  if (static_cast<uint64_t>(st.st_size) != size_)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_, "' changed size while mapped (", size_, " -> ",
                 st.st_size, " bytes); it was truncated or rewritten by another process. Restore the file and restart");
  if (st.st_nlink == 0)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_,
                 "' was deleted while mapped; restore it and restart (the process keeps reading a vanished file)");
  struct stat by_path {};
  if (::stat(path_.c_str(), &by_path) != 0 || by_path.st_dev != device_ || by_path.st_ino != inode_)
    STRATA_THROW(ErrorKind::kIo, "checkpoint file '", path_,
                 "' was replaced or moved while mapped; restart to load the new file");
}

void MappedFile::prefetch(uint64_t offset, uint64_t bytes) const {
  if (data_ == nullptr || offset >= size_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page;
  const uint64_t end = std::min<uint64_t>(size_, offset + bytes);
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_WILLNEED);
}

void MappedFile::drop_pages(uint64_t offset, uint64_t bytes) const {
  if (data_ == nullptr || offset >= size_ || memfd_ >= 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page;
  const uint64_t end = std::min<uint64_t>(size_, offset + bytes);
  // A private read-only mapping never holds changes, so the pages read back as the file's bytes.
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

}  // namespace strata
