// runtime/formats/mapped_file.h: owns a read-only memory mapping of one whole file (checkpoints).
// Pages load lazily on first touch; check_intact() detects a file that shrank or was replaced
// under the mapping so callers fail with an error instead of dying of SIGBUS.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace strata {

class MappedFile {
 public:
  // Maps `path` read-only; throws strata::Error (kIo) naming the file and the system's reason.
  explicit MappedFile(const std::string& path);
  // An anonymous in-memory file (memfd) of `size` bytes, mapped like a file on disk: its path()
  // (/proc/self/fd/N) opens, stats and preads as one for as long as this object lives, so tensors strata
  // builds itself (transcoded quantized weights) serve every reader of checkpoint files, the offload disk
  // tier's included. It reads as zeros and takes no memory until fill() writes a range. Sealed against
  // shrinking and growing, so its size is that of the mapping for good. `label` names it in /proc and errors.
  static MappedFile in_memory(const std::string& label, uint64_t size);
  // Lets `fill` write [offset, offset + n) of an in_memory file in place (a writable window onto it; `offset`
  // a multiple of the page size), so building bytes there needs no buffer and no copy. A throw from `fill`
  // hands the range back (discard) and propagates.
  void fill(uint64_t offset, size_t n, const std::function<void(uint8_t*)>& fill) const;
  // Hands the whole pages inside [offset, offset + n) of an in_memory file back to the system (a punched
  // hole: they read as zeros and take no memory until written again).
  void discard(uint64_t offset, uint64_t n) const;
  // Memory an in_memory file holds now (its allocated blocks); the file's size for others.
  uint64_t allocated_bytes() const;
  ~MappedFile();  // munmap + close; never throws
  MappedFile(MappedFile&& other) noexcept;  // moves leave `other` empty
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Throws kIo when the file under the mapping is no longer the one mapped: it shrank or grew (a
  // touch past the new end raises SIGBUS), was deleted, or its path now names another file. Two
  // system calls; run it before handing out views. A truncation racing between this check and
  // the touch can still fault: mmap offers no way to close that window without a signal handler,
  // and strata installs none (no global state below the launcher).
  void check_intact() const;
  // Asks the kernel to read [offset, offset + bytes) ahead (madvise WILLNEED); a hint, never fails.
  void prefetch(uint64_t offset, uint64_t bytes) const;
  // Unmaps the pages over [offset, offset + bytes) from this process (madvise DONTNEED on a read-only file
  // mapping): they leave its resident set, stay in the page cache, and fault back in on the next touch. For
  // bytes read once (the codes a layer is transcoded from). Not for in_memory files (it would not free them).
  void drop_pages(uint64_t offset, uint64_t bytes) const;

 private:
  MappedFile(const std::string& path, bool shared);  // shared: MAP_SHARED, so fill()s show in the mapping
  void release() noexcept;

  std::string path_;
  int fd_ = -1;
  int memfd_ = -1;  // in_memory: keeps /proc/self/fd/N naming the file
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace strata
