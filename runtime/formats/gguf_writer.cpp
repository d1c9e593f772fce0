// runtime/formats/gguf_writer.cpp: write_gguf (v3) and the GgufValue constructors.
#include <cstring>

#include "runtime/error.h"
#include "runtime/formats/gguf.h"

namespace strata {

GgufValue GgufValue::u32(uint32_t v) { GgufValue g; g.type = GgufType::kU32; g.i = v; return g; }
GgufValue GgufValue::i32(int32_t v) { GgufValue g; g.type = GgufType::kI32; g.i = v; return g; }
GgufValue GgufValue::u64(uint64_t v) { GgufValue g; g.type = GgufType::kU64; g.i = static_cast<int64_t>(v); return g; }
GgufValue GgufValue::f32(float v) { GgufValue g; g.type = GgufType::kF32; g.f = v; return g; }
GgufValue GgufValue::boolean(bool v) { GgufValue g; g.type = GgufType::kBool; g.i = v; return g; }
GgufValue GgufValue::str(std::string v) { GgufValue g; g.type = GgufType::kString; g.s = std::move(v); return g; }

GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue g;
  g.type = GgufType::kArray;
  g.array_type = GgufType::kString;
  g.strings = std::move(v);
  return g;
}

GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  GgufValue g;
  g.type = GgufType::kArray;
  g.array_type = GgufType::kF32;
  g.floats.assign(v.begin(), v.end());
  return g;
}

GgufValue GgufValue::i32_array(const std::vector<int32_t>& v) {
  GgufValue g;
  g.type = GgufType::kArray;
  g.array_type = GgufType::kI32;
  g.ints.assign(v.begin(), v.end());
  return g;
}

namespace {

class Bytes {  // little-endian encoder of the header
 public:
  template <typename T>
  void put(T v) {  // a std::string buffer: GCC 12 misreports vector<uint8_t> growth (-Wstringop-overflow)
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out_.append(b, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_ += s;
  }
  void put_scalar(GgufType t, int64_t i, double f, const std::string& s) {
    switch (t) {
      case GgufType::kU8: case GgufType::kBool: put<uint8_t>(static_cast<uint8_t>(i)); break;
      case GgufType::kI8: put<int8_t>(static_cast<int8_t>(i)); break;
      case GgufType::kU16: put<uint16_t>(static_cast<uint16_t>(i)); break;
      case GgufType::kI16: put<int16_t>(static_cast<int16_t>(i)); break;
      case GgufType::kU32: put<uint32_t>(static_cast<uint32_t>(i)); break;
      case GgufType::kI32: put<int32_t>(static_cast<int32_t>(i)); break;
      case GgufType::kU64: put<uint64_t>(static_cast<uint64_t>(i)); break;
      case GgufType::kI64: put<int64_t>(i); break;
      case GgufType::kF32: put<float>(static_cast<float>(f)); break;
      case GgufType::kF64: put<double>(f); break;
      case GgufType::kString: put_string(s); break;
      case GgufType::kArray: STRATA_THROW(ErrorKind::kInvalidArgument, "GGUF arrays of arrays cannot be written");
    }
  }
  void put_value(const GgufValue& v) {
    if (v.type != GgufType::kArray) return put_scalar(v.type, v.i, v.f, v.s);
    put<uint32_t>(static_cast<uint32_t>(v.array_type));
    put<uint64_t>(v.array_size());
    static const std::string empty;
    if (v.array_type == GgufType::kString) {
      for (const auto& s : v.strings) put_string(s);
    } else if (v.array_type == GgufType::kF32 || v.array_type == GgufType::kF64) {
      for (double f : v.floats) put_scalar(v.array_type, 0, f, empty);
    } else {
      for (int64_t i : v.ints) put_scalar(v.array_type, i, 0, empty);
    }
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

}  // namespace

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<TensorSpec>& tensors, int threads) {
  uint64_t alignment = 32;
  Bytes h;
  h.put<uint32_t>(0x46554747u);  // "GGUF"
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    if (key == "general.alignment") alignment = static_cast<uint64_t>(value.i);
    h.put_string(key);
    h.put<uint32_t>(static_cast<uint32_t>(value.type));
    h.put_value(value);
  }
  STRATA_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, "general.alignment must be a power of two");
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    STRATA_CHECK(!t.shape.empty() && t.shape.size() <= 4, "GGUF tensor '", t.name, "' must have 1 to 4 dimensions");
    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) h.put<uint64_t>(static_cast<uint64_t>(*d));
    h.put<uint32_t>(ggml_type_of(t.dtype));
    h.put<uint64_t>(offset);
    offset = (offset + t.nbytes() + alignment - 1) / alignment * alignment;
  }
  FileSink sink(path);
  sink.write(h.bytes().data(), h.bytes().size());
  for (const auto& t : tensors) {
    sink.pad_to(alignment);
    sink.write_tensor(t, threads);
  }
  sink.pad_to(alignment);
  sink.commit();
}

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_gguf(path, metadata, tensor_specs_of(tensors), 1);
}

}  // namespace strata
