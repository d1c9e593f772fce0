// offload/disk_reader.h: reads of checkpoint bytes for the disk tier with pread on the file itself,
// not through the mapping: a file that shrank turns into a short read and an error naming the file
// and tensor, where a touch of the mapping would die of SIGBUS. Large reads use O_DIRECT where the
// file system takes it (see DiskIo), straight into page-aligned staging.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "offload/residency.h"

namespace strata::offload {

constexpr int64_t kDirectAlign = 4096;
constexpr int64_t kDirectMinBytes = 256 << 10;  // smaller reads go through the page cache

// Owns the descriptors of one checkpoint file (buffered, and O_DIRECT when used). Move-only.
class CheckpointFile {
 public:
  // Opens `path` and checks it still holds `min_size` bytes (the end of its last tensor).
  CheckpointFile(const std::string& path, uint64_t min_size, DiskIo io);
  ~CheckpointFile();
  CheckpointFile(CheckpointFile&& other) noexcept;
  CheckpointFile& operator=(CheckpointFile&& other) noexcept;
  CheckpointFile(const CheckpointFile&) = delete;
  CheckpointFile& operator=(const CheckpointFile&) = delete;

  const std::string& path() const { return path_; }
  bool direct() const { return direct_fd_ >= 0; }
  // Throws kIo when the file changed size, was deleted, or its path names another file now.
  void check_intact() const;
  // Reads [offset, offset + bytes) into dst. With `aligned_room` the caller promises that
  // dst - offset % 4096 is page-aligned and that the page-rounded read fits, so an O_DIRECT read
  // may be used. `tensor` names what is read, for errors.
  void read(uint64_t offset, int64_t bytes, uint8_t* dst, bool aligned_room, const std::string& tensor) const;

 private:
  void release() noexcept;
  [[noreturn]] void short_read(uint64_t offset, int64_t bytes, int64_t got, const std::string& tensor) const;
  std::string path_;
  int fd_ = -1, direct_fd_ = -1;
  uint64_t size_ = 0;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace strata::offload
