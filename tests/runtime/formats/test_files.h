// tests/runtime/formats/test_files.h: where format tests find the shared models and put scratch
// files, and byte-level helpers for crafting corrupt checkpoints.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace strata::test {

namespace fs = std::filesystem;

// $STRATA_SHARED_MODELS/<sub>, or "" when absent (callers GTEST_SKIP with the reason).
inline std::string shared_model_path(const std::string& sub) {
  const char* root = std::getenv("STRATA_SHARED_MODELS");
  const fs::path p = fs::path(root != nullptr ? root : "/work/shared/models") / sub;
  return fs::exists(p) ? p.string() : "";
}

#define STRATA_REQUIRE_SHARED(var, sub)                                                              \
  const std::string var = ::strata::test::shared_model_path(sub);                                    \
  if (var.empty()) GTEST_SKIP() << "shared model '" << (sub) << "' not found under $STRATA_SHARED_MODELS " \
                                << "(the stories260K test models); skipping"

// A fresh, empty scratch directory for the running test under $STRATA_TEST_TMP.
inline std::string scratch_dir() {
  const char* root = std::getenv("STRATA_TEST_TMP");
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path p = fs::path(root != nullptr ? root : fs::temp_directory_path().string()) / "formats" /
                     (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Offset of the first occurrence of `needle` in `bytes` (fails the test when absent).
inline size_t find_bytes(const std::vector<uint8_t>& bytes, const std::string& needle) {
  auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  EXPECT_NE(it, bytes.end()) << "'" << needle << "' not found";
  return static_cast<size_t>(it - bytes.begin());
}

// Runs `f`, expecting a strata::Error of `kind` whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, ErrorKind kind, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected a strata::Error (" << error_kind_name(kind) << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "missing '" << p
                                                                                              << "' in: " << e.what();
  }
}

}  // namespace strata::test
