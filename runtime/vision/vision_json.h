// runtime/vision/vision_json.h: typed reads of JSON config fields for runtime/vision/ (image processor and
// LLaVA configs), with errors naming the file and the key. Internal to runtime/vision/.
#pragma once
#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/error.h"

namespace strata::vision {

inline boost::json::value parse_json_object(const std::string& text, const std::string& source) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  STRATA_CHECK_KIND(ErrorKind::kFormat, !ec, source, ": not valid JSON (", ec.message(), ")");
  STRATA_CHECK_KIND(ErrorKind::kFormat, v.is_object(), source, ": expected a JSON object");
  return v;
}

struct JsonFields {
  const boost::json::object& obj;
  const std::string& source;

  const boost::json::value* find(const char* key) const {
    const boost::json::value* v = obj.if_contains(key);
    return (v == nullptr || v->is_null()) ? nullptr : v;
  }
  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    const boost::json::value* v = find(key);
    if (v == nullptr) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, fallback.has_value(), source, ": required field '", key, "' is missing");
      return *fallback;
    }
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v->get_uint64());
    STRATA_THROW(ErrorKind::kFormat, source, ": field '", key, "' must be an integer, got ", boost::json::serialize(*v));
  }
  double number(const char* key, double fallback) const {
    const boost::json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_number(), source, ": field '", key, "' must be a number, got ",
                      boost::json::serialize(*v));
    return v->to_number<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const boost::json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_bool(), source, ": field '", key, "' must be true or false");
    return v->get_bool();
  }
  std::string string(const char* key, const char* fallback) const {
    const boost::json::value* v = find(key);
    if (v == nullptr) return fallback;
    STRATA_CHECK_KIND(ErrorKind::kFormat, v->is_string(), source, ": field '", key, "' must be a string");
    return std::string(v->as_string());
  }
};

}  // namespace strata::vision
