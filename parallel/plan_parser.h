// parallel/plan_parser.h: YAML text -> Plan, with every problem of the file itself (malformed YAML,
// unknown keys, wrong types) as a located diagnostic. Checks against a model are in plan_check.h.
#pragma once
#include <string>
#include <vector>

#include "parallel/plan.h"

namespace strata::parallel {

struct ParsedPlan {
  Plan plan;  // fields that failed to parse keep their defaults
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return !has_errors(diagnostics); }
};

// Parses plan text; `source` names it in diagnostics (the file path, usually).
ParsedPlan parse_plan(const std::string& text, const std::string& source = "<plan>");
// Reads and parses a file; throws strata::Error(kIo) when it cannot be read.
ParsedPlan parse_plan_file(const std::string& path);
// parse_plan_file, then throws strata::Error(kConfig) with every diagnostic when any is an error.
Plan load_plan(const std::string& path);

// Levenshtein distance, for "did you mean" suggestions.
int edit_distance(const std::string& a, const std::string& b);
// The candidate nearest to `word` when it is close enough to be a likely typo, else "".
std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace strata::parallel
