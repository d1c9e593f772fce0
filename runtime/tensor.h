// runtime/tensor.h: a shaped, typed view of bytes on one device. Storage is shared: an owning
// allocation, or a view into memory someone else keeps alive (a mapped checkpoint, a pool slot).
// Shapes are logical row-major: a weight of a linear layer is [out_features, in_features].
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace strata {

enum class Device : uint8_t { kCpu, kCuda };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Owning host tensor, 64-byte aligned, uninitialised.
  static Tensor empty(Shape shape, DType dtype);
  // Owning host tensor filled with zeros.
  static Tensor zeros(Shape shape, DType dtype);
  // Non-owning view; `keepalive` (may be null) holds the memory's owner.
  static Tensor view(void* data, Shape shape, DType dtype, Device device = Device::kCpu,
                     std::shared_ptr<void> keepalive = nullptr);

  bool defined() const { return data_ != nullptr || !shape_.empty(); }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const { return shape_numel(shape_); }
  int64_t nbytes() const;
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T>
  T* data() { return static_cast<T*>(data_); }
  template <typename T>
  const T* data() const { return static_cast<const T*>(data_); }

  // Rows [start, start+count) of dimension 0, sharing storage.
  Tensor rows(int64_t start, int64_t count) const;
  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  const std::shared_ptr<void>& keepalive() const { return holder_; }

 private:
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::shared_ptr<void> holder_;
  void* data_ = nullptr;
};

}  // namespace strata
