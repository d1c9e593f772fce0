// launcher/http/sampling_defaults.cpp: OpenAI's sampling defaults, or the model's generation_config.json.
#include "launcher/http/sampling_defaults.h"

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/error.h"

namespace strata::launcher::http {
namespace json = boost::json;

SamplingParams openai_sampling_defaults() {
  SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 1.f;
  return p;
}

SamplingParams sampling_defaults_for(const std::string& model_path, std::string* source) {
  SamplingParams p = openai_sampling_defaults();
  if (source != nullptr) *source = "OpenAI's defaults (temperature 1, top_p 1)";
  const std::filesystem::path file = std::filesystem::path(model_path) / "generation_config.json";
  std::error_code fs_error;
  if (!std::filesystem::is_directory(model_path, fs_error) || !std::filesystem::is_regular_file(file, fs_error)) return p;
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  const json::value v = json::parse(text.str(), ec);
  STRATA_CHECK_KIND(ErrorKind::kFormat, !ec && v.is_object(), file.string(), " is not a JSON object",
                    ec ? ": " + ec.message() : "", "; fix or remove it");
  const json::object& o = v.as_object();
  auto number = [&](const char* name, double& out) {
    const json::value* x = o.if_contains(name);
    if (x == nullptr || x->is_null()) return false;
    STRATA_CHECK_KIND(ErrorKind::kFormat, x->is_number(), file.string(), ": '", name, "' must be a number, got ",
                      json::serialize(*x));
    out = x->to_number<double>();
    return true;
  };
  double x = 0;
  if (number("temperature", x)) p.temperature = static_cast<float>(x);
  if (number("top_p", x)) p.top_p = static_cast<float>(x);
  if (number("top_k", x)) p.top_k = static_cast<int>(x);
  if (number("min_p", x)) p.min_p = static_cast<float>(x);
  if (number("repetition_penalty", x)) p.repetition_penalty = static_cast<float>(x);
  try {
    p.validate();
  } catch (const std::exception& e) {
    STRATA_THROW(ErrorKind::kFormat, file.string(), ": ", e.what());
  }
  if (source != nullptr) *source = file.string();
  return p;
}

}  // namespace strata::launcher::http
