// runtime/formats/tensor_stream.cpp: chunked, double-buffered tensor output (generate chunk i+1
// with OpenMP while a helper thread writes chunk i).
#include "runtime/formats/tensor_stream.h"

#include <omp.h>

#include <cerrno>
#include <cstring>
#include <future>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata {

TensorSpec tensor_spec_of(std::string name, const Tensor& tensor) {
  STRATA_CHECK(tensor.device() == Device::kCpu, "tensor '", name, "' must be on the host to be written");
  TensorSpec spec;
  spec.name = std::move(name);
  spec.dtype = tensor.dtype();
  spec.shape = tensor.shape();
  const int64_t rows = spec.rows();
  const uint64_t row_bytes = rows == 0 ? 0 : static_cast<uint64_t>(tensor.nbytes()) / static_cast<uint64_t>(rows);
  spec.fill = [tensor, row_bytes](int64_t row0, int64_t n, uint8_t* dst) {
    std::memcpy(dst, tensor.data<uint8_t>() + row0 * row_bytes, n * row_bytes);
  };
  return spec;
}

std::vector<TensorSpec> tensor_specs_of(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : tensors) specs.push_back(tensor_spec_of(name, t));
  return specs;
}

FileSink::FileSink(std::string path) : path_(std::move(path)), partial_(path_ + ".partial") {
  file_ = std::fopen(partial_.c_str(), "wb");
  if (file_ == nullptr) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot create '", partial_, "': ", std::strerror(err));
  }
}

FileSink::~FileSink() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(partial_.c_str());
  }
}

void FileSink::write(const void* data, size_t bytes) {
  if (bytes == 0) return;
  if (std::fwrite(data, 1, bytes, file_) != bytes) {
    const int err = errno;
    STRATA_THROW(ErrorKind::kIo, "cannot write ", bytes, " bytes at offset ", offset_, " of '", partial_,
                 "': ", std::strerror(err), " (is the disk full?)");
  }
  offset_ += bytes;
}

void FileSink::pad_to(uint64_t alignment, uint8_t byte) {
  static const std::vector<uint8_t> zeros(256, 0);
  const uint64_t pad = (alignment - offset_ % alignment) % alignment;
  if (byte == 0 && pad <= zeros.size()) return write(zeros.data(), pad);
  write(std::vector<uint8_t>(pad, byte).data(), pad);
}

void FileSink::write_tensor(const TensorSpec& spec, int threads) {
  const int64_t rows = spec.rows();
  const uint64_t total = spec.nbytes();
  if (rows == 0 || total == 0) return;
  STRATA_CHECK(static_cast<bool>(spec.fill), "tensor '", spec.name, "' has no data source");
  const uint64_t row_bytes = total / static_cast<uint64_t>(rows);
  // ~32 MiB chunks: large enough to amortise thread start-up, small enough for two to sit in memory.
  const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>((32u << 20) / std::max<uint64_t>(row_bytes, 1)));
  if (threads <= 0) threads = omp_get_max_threads();
  std::vector<uint8_t> buffers[2];
  std::future<void> pending;
  int which = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r0);
    auto& buf = buffers[which];
    buf.resize(static_cast<size_t>(n) * row_bytes);
    uint8_t* dst = buf.data();
    // Split the chunk into row ranges; fill is pure, so the bytes do not depend on `threads`.
    const int64_t parts = std::min<int64_t>(n, static_cast<int64_t>(threads) * 4);
    std::exception_ptr failure;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t p = 0; p < parts; ++p) {
      const int64_t a = n * p / parts, b = n * (p + 1) / parts;
      try {
        if (b > a) spec.fill(r0 + a, b - a, dst + static_cast<uint64_t>(a) * row_bytes);
      } catch (...) {
#pragma omp critical(strata_tensor_stream)
        failure = std::current_exception();
      }
    }
    if (pending.valid()) pending.get();  // rethrows a write error from the previous chunk
    if (failure) std::rethrow_exception(failure);
    pending = std::async(std::launch::async, [this, &buf] { write(buf.data(), buf.size()); });
    which ^= 1;
  }
  if (pending.valid()) pending.get();
}

void FileSink::commit() {
  const bool flushed = std::fflush(file_) == 0;
  const int err = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    std::remove(partial_.c_str());
    STRATA_THROW(ErrorKind::kIo, "cannot finish writing '", partial_, "': ", std::strerror(err));
  }
  if (std::rename(partial_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    std::remove(partial_.c_str());
    STRATA_THROW(ErrorKind::kIo, "cannot rename '", partial_, "' to '", path_, "': ", std::strerror(e));
  }
}

}  // namespace strata
