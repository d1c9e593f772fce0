// runtime/error.h: the one error type of strata. Thrown inside, caught at the edges (main, the HTTP
// handler, worker threads). Messages say what failed, where, and what to do.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace strata {

enum class ErrorKind { kInvalidArgument, kConfig, kIo, kFormat, kCuda, kComm, kTimeout, kOutOfMemory, kInternal };

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  // `location` is where it was raised ("runtime/weights.cpp:88"): kept for the debug log and for bug
  // reports, out of what() so a user reads the message once, without a source path.
  Error(ErrorKind kind, std::string message, std::string location = "")
      : std::runtime_error(std::move(message)), kind_(kind), location_(std::move(location)) {}
  ErrorKind kind() const { return kind_; }
  const std::string& location() const { return location_; }

 private:
  ErrorKind kind_;
  std::string location_;
};

// Joins any streamable values into one string: cat("layer ", 3, " of ", 32).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

namespace detail {
[[noreturn]] void throw_error(ErrorKind kind, const char* condition, const char* file, int line,
                              const std::string& message);
}  // namespace detail

}  // namespace strata

// Throws strata::Error of `kind` with a message built from the remaining arguments.
#define STRATA_THROW(kind, ...) \
  ::strata::detail::throw_error((kind), nullptr, __FILE__, __LINE__, ::strata::cat(__VA_ARGS__))

// Checks an argument or invariant; the message says what to change.
#define STRATA_CHECK(cond, ...)                                                                  \
  do {                                                                                           \
    if (!(cond))                                                                                 \
      ::strata::detail::throw_error(::strata::ErrorKind::kInvalidArgument, #cond, __FILE__, __LINE__, \
                                    ::strata::cat(__VA_ARGS__));                                 \
  } while (0)

#define STRATA_CHECK_KIND(kind, cond, ...)                                                          \
  do {                                                                                              \
    if (!(cond))                                                                                    \
      ::strata::detail::throw_error((kind), #cond, __FILE__, __LINE__, ::strata::cat(__VA_ARGS__)); \
  } while (0)
