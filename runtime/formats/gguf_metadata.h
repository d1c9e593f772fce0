// runtime/formats/gguf_metadata.h: typed access to a GGUF file's metadata for the readers of each kind of
// GGUF (a language model, an mmproj); errors name the file and the key.
#pragma once
#include <optional>
#include <string>

#include "runtime/error.h"
#include "runtime/formats/gguf.h"

namespace strata {

// `file` and `source` must outlive it.
class GgufMetadata {
 public:
  GgufMetadata(const GgufFile& file, const std::string& source) : file_(file), source_(source) {}

  const GgufValue* find(const std::string& key) const { return file_.find(key); }
  int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    const GgufValue* v = find(key);
    if (v == nullptr) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, fallback.has_value(), source_, ": required metadata '", key,
                        "' is missing");
      return *fallback;
    }
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_integer(), source_, ": metadata '", key, "' must be an integer, not ",
                      gguf_type_name(v->type));
    return v->i;
  }
  double number(const std::string& key, double fallback) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return fallback;
    if (v->is_integer()) return static_cast<double>(v->i);
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_float(), source_, ": metadata '", key, "' must be a number, not ",
                      gguf_type_name(v->type));
    return v->f;
  }
  bool boolean(const std::string& key, bool fallback) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->type == GgufType::kBool, source_, ": metadata '", key,
                      "' must be a bool, not ", gguf_type_name(v->type));
    return v->i != 0;
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->type == GgufType::kString, source_, ": metadata '", key,
                      "' must be a string, not ", gguf_type_name(v->type));
    return v->s;
  }
  const GgufValue* array(const std::string& key, GgufType element) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return nullptr;
    const bool ok = v->type == GgufType::kArray &&
                    (v->array_type == element || (element == GgufType::kI32 && v->is_array_of_integers()) ||
                     (element == GgufType::kF32 && v->array_type == GgufType::kF64));
    STRATA_CHECK_KIND(ErrorKind::kFormat, ok, source_, ": metadata '", key, "' must be an array of ",
                      gguf_type_name(element));
    return v;
  }
  const std::string& source() const { return source_; }

 private:
  const GgufFile& file_;
  const std::string& source_;
};

}  // namespace strata
