// parallel/plan.cpp: the small behaviours of the plan struct: diagnostics text, budgets, locations.
#include "parallel/plan.h"

#include <cstdio>

#include "parallel/byte_size.h"
#include "runtime/error.h"

namespace strata::parallel {

std::string Diagnostic::str() const {
  std::string where = file.empty() ? "<plan>" : file;
  if (loc.line > 0) where += cat(":", loc.line, ":", loc.column);
  return cat(where, ": ", severity == Severity::kError ? "error" : "warning", ": ", message);
}

bool has_errors(const std::vector<Diagnostic>& diagnostics) {
  for (const auto& d : diagnostics)
    if (d.severity == Severity::kError) return true;
  return false;
}

std::string join_diagnostics(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics) {
    if (!out.empty()) out += '\n';
    out += d.str();
  }
  return out;
}

void throw_if_errors(const std::vector<Diagnostic>& diagnostics) {
  if (!has_errors(diagnostics)) return;
  int errors = 0;
  for (const auto& d : diagnostics) errors += d.severity == Severity::kError;
  // Every finding goes in one message, so a user fixes the plan in one pass rather than one per run.
  throw Error(ErrorKind::kConfig, cat("invalid plan (", errors, errors == 1 ? " error" : " errors", "):\n",
                                      join_diagnostics(diagnostics)));
}

int64_t Budget::resolve(int64_t capacity) const {
  if (bytes >= 0) return bytes;
  if (percent > 0 && capacity > 0) return offload::share_bytes(capacity, percent);
  return -1;
}

std::string Budget::str() const {
  if (bytes >= 0) return format_bytes(bytes);
  if (percent > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", percent);
    return buf;
  }
  return "unlimited";
}

const char* comm_backend_name(CommBackend backend) {
  switch (backend) {
    case CommBackend::kAuto: return "auto";
    case CommBackend::kMpi: return "mpi";
    case CommBackend::kNccl: return "nccl";
  }
  return "?";
}

SourceLoc Plan::where(const std::string& field) const {
  std::string key = field;
  while (!key.empty()) {
    auto it = locations.find(key);
    if (it != locations.end()) return it->second;
    const size_t cut = key.find_last_of(".[");
    if (cut == std::string::npos) break;
    key.resize(cut);
  }
  return SourceLoc{1, 1};
}

Diagnostic Plan::diagnostic(const std::string& field, std::string message, Severity severity) const {
  Diagnostic d;
  d.severity = severity;
  d.file = source;
  d.loc = where(field);
  d.field = field;
  d.message = std::move(message);
  return d;
}

}  // namespace strata::parallel
