// launcher/args.cpp: flag parsing with actionable errors.
#include "launcher/args.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"

namespace strata::launcher {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::min<size_t>(3, std::max<size_t>(1, word.size() / 2 + 1));
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

Args::Args(const std::string& command, const std::vector<FlagSpec>& flags, int argc, char** argv, int first,
           bool positionals)
    : command_(command), flags_(flags) {
  for (int i = first; i < argc; ++i)
    if (!std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help")) throw HelpRequested{usage()};
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    // "-n 5" is accepted as "--n 5": single-dash flags of one or more letters.
    if (arg.size() >= 2 && arg[0] == '-' && arg[1] != '-' && std::isalpha(static_cast<unsigned char>(arg[1])))
      arg = "-" + arg;
    if (arg.rfind("--", 0) != 0) {
      STRATA_CHECK(positionals, "unexpected argument '", arg, "'; `strata ", command, " --help` lists the flags");
      positionals_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    const auto eq = name.find('=');
    bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const auto spec = std::find_if(flags_.begin(), flags_.end(), [&](const FlagSpec& f) { return f.name == name; });
    if (spec == flags_.end()) {
      std::vector<std::string> names;
      for (const FlagSpec& f : flags_) names.push_back(f.name);
      const std::string best = nearest(name, names);
      STRATA_THROW(ErrorKind::kInvalidArgument, "unknown flag --", name,
                   best.empty() ? std::string() : " (did you mean --" + best + "?)", "; `strata ", command,
                   " --help` lists the flags");
    }
    if (spec->takes_value && !inline_value) {
      STRATA_CHECK(i + 1 < argc, "flag --", name, " needs a value");
      value = argv[++i];
    }
    values_[name] = spec->takes_value ? value : "1";
    every_[name].push_back(values_[name]);
  }
}

std::string Args::str(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Args::required(const std::string& name) const {
  STRATA_CHECK(has(name), "--", name, " is required; `strata ", command_, " --help` lists the flags");
  return str(name);
}

int64_t Args::integer(const std::string& name, int64_t fallback, int64_t min, int64_t max) const {
  if (!has(name)) return fallback;
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  STRATA_CHECK(errno == 0 && end != v.c_str() && *end == '\0', "--", name,
               " must be an integer, got '", v, "'");
  STRATA_CHECK(x >= min && x <= max, "--", name, " = ", x, " is out of range [", min, ", ",
               max, "]");
  return x;
}

double Args::number(const std::string& name, double fallback, double min, double max) const {
  if (!has(name)) return fallback;
  const std::string v = str(name);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  STRATA_CHECK(end != v.c_str() && *end == '\0', "--", name, " must be a number, got '", v,
               "'");
  STRATA_CHECK(x >= min && x <= max, "--", name, " = ", x, " is out of range [", min, ", ", max,
               "]");
  return x;
}

std::string Args::usage() const {
  // The command's own flags first, then each shared group under its heading, in order of appearance.
  std::vector<std::string> groups = {""};
  for (const FlagSpec& f : flags_)
    if (std::find(groups.begin(), groups.end(), f.group) == groups.end()) groups.push_back(f.group);
  size_t width = 0;
  for (const FlagSpec& f : flags_) width = std::max(width, f.name.size() + (f.takes_value ? 6 : 0));
  auto line = [&](std::string left, const std::string& help) {
    left.resize(std::max(left.size(), width + 2), ' ');
    return "  " + left + "  " + help + "\n";
  };
  std::string u = "usage: strata " + command_ + " [flags]\n";
  for (const std::string& group : groups) {
    if (!group.empty()) u += "\n" + group + ":\n";
    for (const FlagSpec& f : flags_)
      if (f.group == group)
        u += line((f.name.size() == 1 ? "-" : "--") + f.name + (f.takes_value ? " VALUE" : ""), f.help);
    if (group.empty()) u += line("-h, --help", "show this help");
  }
  return u;
}

}  // namespace strata::launcher
