// runtime/formats/safetensors.cpp: safetensors header parsing (Boost.JSON) and writing.
#include "runtime/formats/safetensors.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cstring>

#include "runtime/error.h"

namespace strata {
namespace json = boost::json;

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kF8_E4M3: return "F8_E4M3";
    default: break;
  }
  STRATA_THROW(ErrorKind::kInvalidArgument, "dtype ", dtype_name(dtype),
               " cannot be stored in safetensors; use f32, f16 or bf16 (or GGUF for q8_0/q4_0)");
}

namespace {

bool dtype_from_safetensors(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16}, {"I8", DType::kI8}, {"I32", DType::kI32},
      {"I64", DType::kI64}, {"F8_E4M3", DType::kF8_E4M3}};
  for (const auto& [name, dt] : kTable)
    if (s == name) {
      *out = dt;
      return true;
    }
  return false;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// JSON integer that must be a non-negative count (shape dims, offsets).
bool as_u64(const json::value& v, uint64_t* out) {
  if (v.is_uint64()) {
    *out = v.get_uint64();
    return true;
  }
  if (v.is_int64() && v.get_int64() >= 0) {
    *out = static_cast<uint64_t>(v.get_int64());
    return true;
  }
  return false;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source) {
  auto fail = [&](const auto&... what) { STRATA_THROW(ErrorKind::kFormat, source, ": ", what...); };
  if (size < 8) fail("file is ", size, " bytes, too short for a safetensors header (8-byte length + JSON)");
  const uint64_t header_len = read_u64_le(data);
  if (header_len < 2 || header_len > kMaxSafetensorsHeader)
    fail("header length ", header_len, " is not plausible (must be 2..", kMaxSafetensorsHeader,
         "); not a safetensors file or corrupt");
  if (header_len > size - 8)
    fail("header length ", header_len, " runs past the end of the file (", size,
         " bytes); the file is truncated or not safetensors");
  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = size - out.data_offset;

  json::parse_options opts;
  opts.max_depth = 16;
  boost::system::error_code ec;
  json::monotonic_resource mr;
  const json::value root =
      json::parse(json::string_view(reinterpret_cast<const char*>(data + 8), header_len), ec, &mr, opts);
  if (ec) fail("header is not valid JSON (", ec.message(), ")");
  if (!root.is_object()) fail("header is not a JSON object");

  for (const auto& kv : root.as_object()) {
    const std::string name(kv.key());
    if (name == "__metadata__") {
      if (!kv.value().is_object()) fail("__metadata__ is not an object");
      for (const auto& m : kv.value().as_object()) {
        if (!m.value().is_string()) fail("__metadata__ value '", std::string(m.key()), "' is not a string");
        out.metadata.emplace_back(std::string(m.key()), std::string(m.value().as_string()));
      }
      continue;
    }
    if (!kv.value().is_object()) fail("tensor '", name, "' header entry is not an object");
    const auto& obj = kv.value().as_object();
    const json::value* dt = obj.if_contains("dtype");
    const json::value* shape = obj.if_contains("shape");
    const json::value* offsets = obj.if_contains("data_offsets");
    if (dt == nullptr || !dt->is_string()) fail("tensor '", name, "' has no string 'dtype'");
    if (shape == nullptr || !shape->is_array()) fail("tensor '", name, "' has no 'shape' array");
    if (offsets == nullptr || !offsets->is_array() || offsets->as_array().size() != 2)
      fail("tensor '", name, "' has no 'data_offsets' [begin, end]");
    SafetensorsTensor t;
    t.name = name;
    const std::string dtype_str(dt->as_string());
    if (!dtype_from_safetensors(dtype_str, &t.dtype))
      fail("tensor '", name, "' has dtype ", dtype_str,
           ", which strata does not read (supported: F32, F16, BF16, I8, I32, I64, F8_E4M3); convert the checkpoint");
    if (shape->as_array().size() > 8) fail("tensor '", name, "' has ", shape->as_array().size(), " dimensions");
    uint64_t numel = 1;
    for (const auto& d : shape->as_array()) {
      uint64_t v = 0;
      if (!as_u64(d, &v) || v > (1ull << 40)) fail("tensor '", name, "' has an invalid shape dimension");
      if (__builtin_mul_overflow(numel, v, &numel) || numel > (1ull << 50))
        fail("tensor '", name, "' has a shape too large to be real");
      t.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t begin = 0, end = 0;
    if (!as_u64(offsets->as_array()[0], &begin) || !as_u64(offsets->as_array()[1], &end) || begin > end)
      fail("tensor '", name, "' has invalid data_offsets (need 0 <= begin <= end)");
    if (end > data_size)
      fail("tensor '", name, "' data_offsets [", begin, ", ", end, ") run past the end of the data section (",
           data_size, " bytes); the file is truncated or its header is corrupt");
    t.nbytes = end - begin;
    const uint64_t want = numel * static_cast<uint64_t>(dtype_block_bytes(t.dtype));
    if (t.nbytes != want)
      fail("tensor '", name, "' has ", t.nbytes, " bytes of data but shape ", shape_str(t.shape), " x ", dtype_str,
           " needs ", want, "; the header is inconsistent");
    t.offset = out.data_offset + begin;
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.offset < b.offset; });
  // As the safetensors format (and its reference validator) requires, the tensors tile the data
  // section exactly: no overlap, no gap, nothing after the last. A header length off by a few bytes
  // shifts the data section, which this catches (otherwise every weight would be read misaligned).
  uint64_t expected = out.data_offset;
  for (const auto& t : out.tensors) {
    if (t.offset < expected)
      fail("tensor '", t.name, "' at data offset ", t.offset - out.data_offset, " overlaps the tensor before it (which "
           "ends at ", expected - out.data_offset, "); the header is corrupt");
    if (t.offset > expected)
      fail("tensor '", t.name, "' starts at data offset ", t.offset - out.data_offset, " but the tensors before it end at ",
           expected - out.data_offset, "; the data section has a gap, so the header is corrupt");
    expected = t.offset + t.nbytes;
  }
  if (expected != size)
    fail("the tensors end at data offset ", expected - out.data_offset, " but the data section holds ", data_size,
         " bytes; the header length (", header_len, ") or the data_offsets are wrong");
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata, int threads) {
  json::object header;
  if (!metadata.empty()) {
    json::object meta;
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    json::array shape;
    for (int64_t d : t.shape) shape.push_back(d);
    const uint64_t n = t.nbytes();
    STRATA_CHECK(!header.contains(t.name), "duplicate tensor name '", t.name, "' written to ", path);
    header[t.name] = json::object{{"dtype", safetensors_dtype_name(t.dtype)},
                                  {"shape", std::move(shape)},
                                  {"data_offsets", json::array{offset, offset + n}}};
    offset += n;
  }
  std::string text = json::serialize(header);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  FileSink sink(path);
  sink.write(len, 8);
  sink.write(text.data(), text.size());
  for (const auto& t : tensors) sink.write_tensor(t, threads);
  sink.commit();
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, tensor_specs_of(tensors), metadata, 1);
}

}  // namespace strata
