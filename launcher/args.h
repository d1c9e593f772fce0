// launcher/args.h: command-line flags of one subcommand: `--name value`, `--name=value`, bare
// switches. Unknown flags are errors that suggest the nearest known one.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace strata::launcher {

struct FlagSpec {
  FlagSpec(std::string name_, bool takes_value_, std::string help_, std::string group_ = "")
      : name(std::move(name_)), takes_value(takes_value_), help(std::move(help_)), group(std::move(group_)) {}
  std::string name;  // without dashes, e.g. "top-k"
  bool takes_value = true;
  std::string help;
  // Heading of a group of flags shared by several commands ("model and placement"); empty for the
  // command's own flags, which the usage lists first.
  std::string group;
};

// Thrown by Args when -h or --help is given (whatever else is on the line): run_cli prints `usage` to
// stdout and exits 0, so every command and subcommand answers --help the same way without running.
struct HelpRequested {
  std::string usage;
};

class Args {
 public:
  // Parses argv[first..argc) against `flags`; throws strata::Error (kInvalidArgument) on unknown
  // flags, missing values or stray positionals (unless `positionals` allows them), HelpRequested on
  // -h/--help. `command` names it in messages ("bench decode").
  Args(const std::string& command, const std::vector<FlagSpec>& flags, int argc, char** argv, int first,
       bool positionals = false);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string str(const std::string& name, const std::string& fallback = "") const;  // the last given
  // Every value of a flag given more than once (`--replica A --replica B`), in order.
  std::vector<std::string> all(const std::string& name) const {
    const auto it = every_.find(name);
    return it == every_.end() ? std::vector<std::string>{} : it->second;
  }
  std::string required(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t fallback, int64_t min, int64_t max) const;
  double number(const std::string& name, double fallback, double min, double max) const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string usage() const;

 private:
  std::string command_;
  std::vector<FlagSpec> flags_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> every_;
  std::vector<std::string> positionals_;
};

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);
// The candidate nearest to `word` within a couple of edits, or "" when none is close.
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace strata::launcher
