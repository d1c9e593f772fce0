// runtime/formats/gguf_reader.cpp: parse_gguf_buffer, a defensive reader of GGUF bytes. Every
// count read from the file is checked against the bytes left before anything is allocated.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "runtime/error.h"
#include "runtime/formats/gguf.h"

namespace strata {

const char* gguf_type_name(GgufType type) {
  static const char* kNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(type);
  return i < 13 ? kNames[i] : "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kU16: case GgufType::kI16:
    case GgufType::kU32: case GgufType::kI32: case GgufType::kU64: case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_array_of_integers() const {
  if (type != GgufType::kArray) return false;
  GgufValue probe;
  probe.type = array_type;
  return probe.is_integer() || array_type == GgufType::kBool;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

namespace {

// ggml's type ids (ggml.h's enum ggml_type) for the dtypes strata reads.
constexpr std::pair<DType, uint32_t> kGgmlTypes[] = {
    {DType::kF32, 0},     {DType::kF16, 1},     {DType::kQ4_0, 2},   {DType::kQ4_1, 3},    {DType::kQ5_0, 6},
    {DType::kQ5_1, 7},    {DType::kQ8_0, 8},    {DType::kQ2_K, 10},  {DType::kQ3_K, 11},   {DType::kQ4_K, 12},
    {DType::kQ5_K, 13},   {DType::kQ6_K, 14},   {DType::kIQ4_NL, 20}, {DType::kIQ4_XS, 23}, {DType::kI8, 24},
    {DType::kI32, 26},    {DType::kBF16, 30},
};

}  // namespace

uint32_t ggml_type_of(DType dtype) {
  for (const auto& [d, id] : kGgmlTypes)
    if (d == dtype) return id;
  STRATA_THROW(ErrorKind::kInternal, "no ggml type for dtype ", dtype_name(dtype));
}

namespace {

bool dtype_of_ggml(uint32_t type, DType* out) {
  for (const auto& [d, id] : kGgmlTypes)
    if (id == type) {
      *out = d;
      return true;
    }
  return false;
}

constexpr char kSupportedTypes[] = "F32, F16, BF16, I8, I32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, "
                              "IQ4_NL, IQ4_XS";

const char* ggml_type_label(uint32_t type) {
  static const char* kNames[] = {"F32",     "F16",    "Q4_0",    "Q4_1",  "Q4_2",   "Q4_3",   "Q5_0",   "Q5_1",
                                 "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",  "Q4_K",   "Q5_K",   "Q6_K",   "Q8_K",
                                 "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",  "IQ2_S",  "IQ4_XS",
                                 "I8",      "I16",    "I32",     "I64",   "F64",    "IQ1_M",  "BF16"};
  return type < sizeof(kNames) / sizeof(kNames[0]) ? kNames[type] : "unknown";
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& source) : data_(data), size_(size), source_(source) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  template <typename T>
  T scalar(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // GGUF is little-endian, like every host strata runs on
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t len = scalar<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }
  void need(uint64_t bytes, const char* what) const {
    if (bytes > left())
      STRATA_THROW(ErrorKind::kFormat, source_, ": truncated GGUF: ", what, " needs ", bytes, " bytes at offset ",
                   pos_, " but only ", left(), " remain");
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& source_;
};

// Smallest encoding of one element of `t`; bounds array counts before allocating.
uint64_t min_size(GgufType t) {
  switch (t) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    default: return 8;  // u64, i64, f64, string length
  }
}

void read_scalar(Reader& r, GgufType t, GgufValue& v, const std::string& key, const std::string& source) {
  switch (t) {
    case GgufType::kU8: v.i = r.scalar<uint8_t>("u8 value"); break;
    case GgufType::kI8: v.i = r.scalar<int8_t>("i8 value"); break;
    case GgufType::kU16: v.i = r.scalar<uint16_t>("u16 value"); break;
    case GgufType::kI16: v.i = r.scalar<int16_t>("i16 value"); break;
    case GgufType::kU32: v.i = r.scalar<uint32_t>("u32 value"); break;
    case GgufType::kI32: v.i = r.scalar<int32_t>("i32 value"); break;
    case GgufType::kU64: v.i = static_cast<int64_t>(r.scalar<uint64_t>("u64 value")); break;
    case GgufType::kI64: v.i = r.scalar<int64_t>("i64 value"); break;
    case GgufType::kF32: v.f = r.scalar<float>("f32 value"); break;
    case GgufType::kF64: v.f = r.scalar<double>("f64 value"); break;
    case GgufType::kBool: {
      const uint8_t b = r.scalar<uint8_t>("bool value");
      STRATA_CHECK_KIND(ErrorKind::kFormat, b <= 1, source, ": metadata '", key, "' has bool value ", int(b));
      v.i = b;
      break;
    }
    case GgufType::kString: v.s = r.string("string value"); break;
    default:
      STRATA_THROW(ErrorKind::kFormat, source, ": metadata '", key, "' has unknown value type ",
                   static_cast<uint32_t>(t));
  }
}

GgufValue read_value(Reader& r, GgufType type, const std::string& key, const std::string& source) {
  GgufValue v;
  v.type = type;
  if (type != GgufType::kArray) {
    read_scalar(r, type, v, key, source);
    return v;
  }
  v.array_type = static_cast<GgufType>(r.scalar<uint32_t>("array element type"));
  const uint64_t count = r.scalar<uint64_t>("array length");
  STRATA_CHECK_KIND(ErrorKind::kFormat, v.array_type != GgufType::kArray, source, ": metadata '", key,
                    "' is an array of arrays, which strata does not read");
  STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<uint32_t>(v.array_type) <= 12, source, ": metadata '", key,
                    "' is an array of unknown type ", static_cast<uint32_t>(v.array_type));
  STRATA_CHECK_KIND(ErrorKind::kFormat, count <= r.left() / min_size(v.array_type), source, ": metadata '", key,
                    "' claims ", count, " elements but only ", r.left(), " bytes remain; the file is corrupt");
  GgufValue elem;
  for (uint64_t n = 0; n < count; ++n) {
    read_scalar(r, v.array_type, elem, key, source);
    if (v.array_type == GgufType::kString) {
      v.strings.push_back(std::move(elem.s));
    } else if (v.array_type == GgufType::kF32 || v.array_type == GgufType::kF64) {
      v.floats.push_back(elem.f);
    } else {
      v.ints.push_back(elem.i);
    }
  }
  return v;
}

}  // namespace

GgufFile parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& source) {
  Reader r(data, size, source);
  GgufFile out;
  r.need(4, "magic");
  if (std::memcmp(data, "GGUF", 4) != 0)
    STRATA_THROW(ErrorKind::kFormat, source, ": not a GGUF file (bad magic; expected 'GGUF' in the first 4 bytes)");
  r.scalar<uint32_t>("magic");
  out.version = r.scalar<uint32_t>("version");
  STRATA_CHECK_KIND(ErrorKind::kFormat, out.version == 2 || out.version == 3, source, ": GGUF version ",
                    out.version, " is not supported (strata reads v2 and v3; re-convert with a current llama.cpp)");
  const uint64_t n_tensors = r.scalar<uint64_t>("tensor count");
  const uint64_t n_kv = r.scalar<uint64_t>("metadata count");
  // Each metadata pair takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info 8+4+8+4+8.
  STRATA_CHECK_KIND(ErrorKind::kFormat, n_kv <= r.left() / 13 && n_tensors <= r.left() / 32, source,
                    ": header claims ", n_kv, " metadata pairs and ", n_tensors, " tensors, more than the file can hold");

  std::unordered_set<std::string> keys;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.string("metadata key");
    const auto type = static_cast<GgufType>(r.scalar<uint32_t>("metadata value type"));
    STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<uint32_t>(type) <= 12, source, ": metadata '", key,
                      "' has unknown value type ", static_cast<uint32_t>(type));
    GgufValue value = read_value(r, type, key, source);
    STRATA_CHECK_KIND(ErrorKind::kFormat, keys.insert(key).second, source, ": metadata key '", key, "' appears twice");
    out.metadata.emplace_back(std::move(key), std::move(value));
  }
  if (const GgufValue* a = out.find("general.alignment")) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, a->is_integer() && a->i > 0 && a->i <= (1 << 20) && (a->i & (a->i - 1)) == 0,
                      source, ": general.alignment must be a power of two up to 1 MiB");
    out.alignment = static_cast<uint64_t>(a->i);
  }

  std::unordered_set<std::string> names;
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensorInfo info;
    info.name = r.string("tensor name");
    const uint32_t n_dims = r.scalar<uint32_t>("tensor dimension count");
    STRATA_CHECK_KIND(ErrorKind::kFormat, n_dims >= 1 && n_dims <= 4, source, ": tensor '", info.name, "' has ",
                      n_dims, " dimensions (GGUF allows 1 to 4)");
    uint64_t numel = 1;
    Shape ne(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = r.scalar<uint64_t>("tensor dimension");
      STRATA_CHECK_KIND(ErrorKind::kFormat, n <= (1ull << 40) && !__builtin_mul_overflow(numel, n, &numel) &&
                                                numel <= (1ull << 50),
                        source, ": tensor '", info.name, "' has an impossible dimension ", n);
      ne[d] = static_cast<int64_t>(n);
    }
    info.shape.assign(ne.rbegin(), ne.rend());
    info.ggml_type = r.scalar<uint32_t>("tensor type");
    const uint64_t rel = r.scalar<uint64_t>("tensor offset");
    if (!dtype_of_ggml(info.ggml_type, &info.dtype))
      STRATA_THROW(ErrorKind::kFormat, source, ": tensor '", info.name, "' has ggml type ", info.ggml_type, " (",
                   ggml_type_label(info.ggml_type), "), which strata does not read; supported: ", kSupportedTypes,
                   " (re-quantize with one of these, e.g. llama-quantize ... Q4_K_M)");
    const int64_t block = dtype_block_elems(info.dtype);
    STRATA_CHECK_KIND(ErrorKind::kFormat, ne[0] % block == 0, source, ": tensor '", info.name, "' (",
                      ggml_type_label(info.ggml_type), ", ", shape_str(info.shape), ") has rows of ", ne[0],
                      " elements, not a multiple of the ", block, "-element ", ggml_type_label(info.ggml_type),
                      " block; the file is corrupt, or re-quantize this tensor to a type whose block divides ", ne[0],
                      " (block sizes: 32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, 256 for the K-quants and IQ4_XS, 1 for "
                      "F32/F16/BF16)");
    info.nbytes = numel / static_cast<uint64_t>(block) * static_cast<uint64_t>(dtype_block_bytes(info.dtype));
    STRATA_CHECK_KIND(ErrorKind::kFormat, rel % out.alignment == 0, source, ": tensor '", info.name, "' offset ", rel,
                      " is not a multiple of the alignment ", out.alignment);
    info.offset = rel;  // relative until the data section start is known
    STRATA_CHECK_KIND(ErrorKind::kFormat, names.insert(info.name).second, source, ": tensor '", info.name,
                      "' appears twice");
    out.tensors.push_back(std::move(info));
  }
  const uint64_t end_of_infos = r.pos();
  out.data_offset = (end_of_infos + out.alignment - 1) / out.alignment * out.alignment;
  const uint64_t data_size = out.data_offset <= size ? size - out.data_offset : 0;
  // GGUF writers (llama.cpp's gguf, the gguf package, ours) place tensors in the order of their infos,
  // each at the previous one's end rounded up to the alignment, and llama.cpp refuses files that do
  // not. Holding every file to that layout catches tensors moved onto each other (all at offset 0,
  // overlapping), shifted, or retyped (a different size moves every later offset).
  uint64_t expected = 0;
  const GgufTensorInfo* previous = nullptr;
  for (auto& t : out.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      STRATA_THROW(ErrorKind::kFormat, source, ": tensor '", t.name, "' (", shape_str(t.shape), " ",
                   dtype_name(t.dtype), ", ", t.nbytes, " bytes at data offset ", t.offset,
                   ") runs past the end of the file (data section holds ", data_size,
                   " bytes); the file is truncated or corrupt");
    // A tensor whose declared size runs into the next one's bytes: its type or shape is not what was
    // written (a retyped or mis-converted tensor).
    if (previous != nullptr && t.offset < expected && t.offset > previous->offset - out.data_offset)
      STRATA_THROW(ErrorKind::kFormat, source, ": tensor '", previous->name, "' is declared ",
                   ggml_type_label(previous->ggml_type), " ", shape_str(previous->shape), ", which takes ",
                   previous->nbytes, " bytes, but tensor '", t.name, "' starts ",
                   t.offset - (previous->offset - out.data_offset), " bytes after it; the declared type or shape does "
                   "not match the bytes in the file (a corrupt or mis-converted GGUF)");
    if (t.offset != expected)
      STRATA_THROW(ErrorKind::kFormat, source, ": tensor '", t.name, "' (", shape_str(t.shape), " ",
                   dtype_name(t.dtype), ", ", t.nbytes, " bytes) is at data offset ", t.offset, " but the tensors "
                   "before it end at ", expected, "; its offset, or the type or shape of a tensor before it, is corrupt");
    expected = (t.offset + t.nbytes + out.alignment - 1) / out.alignment * out.alignment;
    t.offset += out.data_offset;
    previous = &t;
  }
  return out;
}

}  // namespace strata
