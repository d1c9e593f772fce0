// runtime/tokenizer/file_bytes.h: reads a whole (small) tokenizer file into memory; kIo errors name
// the path and the OS reason.
#pragma once
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "runtime/error.h"

namespace strata {

inline std::string read_file_bytes(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) STRATA_THROW(ErrorKind::kIo, "cannot open ", what, " '", path, "': ", std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) STRATA_THROW(ErrorKind::kIo, "cannot read ", what, " '", path, "': ", std::strerror(errno));
  return bytes;
}

}  // namespace strata
