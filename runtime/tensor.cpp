// runtime/tensor.cpp: host allocation and views.
#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace strata {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::nbytes() const { return dtype_bytes(dtype_, numel()); }

Tensor Tensor::empty(Shape shape, DType dtype) {
  for (int64_t d : shape) STRATA_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  const int64_t bytes = t.nbytes();
  const size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, p != nullptr, "cannot allocate ", bytes, " bytes of host memory for ",
                    shape_str(t.shape_));
  t.holder_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.data_, 0, static_cast<size_t>(t.nbytes()));
  return t;
}

Tensor Tensor::view(void* data, Shape shape, DType dtype, Device device, std::shared_ptr<void> keepalive) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.holder_ = std::move(keepalive);
  t.data_ = data;
  return t;
}

Tensor Tensor::rows(int64_t start, int64_t count) const {
  STRATA_CHECK(rank() >= 1 && start >= 0 && count >= 0 && start + count <= shape_[0], "rows [", start, ", ",
               start + count, ") out of range for shape ", shape_str(shape_));
  Shape s = shape_;
  s[0] = count;
  const int64_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / shape_[0];
  Tensor t = *this;
  t.shape_ = std::move(s);
  t.data_ = static_cast<uint8_t*>(data_) + start * row_bytes;
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  STRATA_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace strata
