// tests/runtime/tokenizer/tokenizer_fixture.h: paths and JSON fixture loading shared by the tokenizer
// tests. Fixtures come from tools/reference/make_tokenizer_fixtures.py (Hugging Face / sentencepiece).
#pragma once
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace strata::test {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// ctest sets STRATA_SOURCE_DIR; run by hand, the repository is found from this header's own path.
inline std::string source_dir() {
  const std::string here = __FILE__;
  return env_or("STRATA_SOURCE_DIR", here.substr(0, here.rfind("/tests/runtime/tokenizer/")));
}
inline std::string fixture_dir() { return source_dir() + "/tests/fixtures/tokenizer"; }
inline std::string shared_models() { return env_or("STRATA_SHARED_MODELS", source_dir() + "/../shared/models"); }
inline std::string test_tmp() {
  const std::string dir = env_or("STRATA_TEST_TMP", std::filesystem::temp_directory_path().string()) + "/tokenizer";
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline boost::json::value read_json(const std::string& path) {
  return boost::json::parse(read_text(path));
}

inline std::vector<int32_t> ids_of(const boost::json::value& v) {
  std::vector<int32_t> ids;
  for (const auto& x : v.as_array()) ids.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return ids;
}

inline std::string str_of(const boost::json::value& v) { return std::string(v.as_string()); }

// Skips the calling test when the shared stories260K files are not on this machine.
#define STRATA_REQUIRE_FILE(path)                                                                       \
  do {                                                                                                  \
    if (!std::filesystem::exists(path))                                                                 \
      GTEST_SKIP() << "missing " << (path) << " (shared models are read from STRATA_SHARED_MODELS)";    \
  } while (0)

}  // namespace strata::test
