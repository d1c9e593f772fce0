// runtime/error.cpp: formatting of strata::Error messages.
#include "runtime/error.h"


namespace strata {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kConfig: return "config error";
    case ErrorKind::kIo: return "I/O error";
    case ErrorKind::kFormat: return "format error";
    case ErrorKind::kCuda: return "CUDA error";
    case ErrorKind::kComm: return "communication error";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kOutOfMemory: return "out of memory";
    case ErrorKind::kInternal: return "internal error";
  }
  return "error";
}

namespace detail {
void throw_error(ErrorKind kind, const char* condition, const char* file, int line, const std::string& message) {
  // Keep paths short: "runtime/model.cpp" rather than the build machine's absolute path.
  std::string where = file;
  for (const char* root : {"/runtime/", "/parallel/", "/comm/", "/offload/", "/launcher/", "/tests/"}) {
    auto pos = where.rfind(root);
    if (pos != std::string::npos) {
      where = where.substr(pos + 1);
      break;
    }
  }
  std::string text = message;
  // An internal error is a bug in strata: its message carries the failed check and the source line
  // for the report; every other message is for the user, who needs neither.
  if (kind == ErrorKind::kInternal) {
    if (condition != nullptr) text += cat(" (check failed: ", condition, ")");
    text += cat(" [", where, ":", line, "]");
  }
  throw Error(kind, text, cat(where, ":", line));
}
}  // namespace detail

}  // namespace strata
