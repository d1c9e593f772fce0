// tests/hf_fixture.h: the token ids of a transformers fixture (tools/reference writes ids.json beside
// the model: the scored ids, a greedy prompt and transformers' greedy continuation of it).
#pragma once
#include <boost/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace strata::test {

struct HfFixture {
  std::vector<int32_t> ids, greedy_prompt, greedy;
};

inline HfFixture read_hf_fixture(const std::string& dir) {
  std::ifstream in(dir + "/ids.json");
  std::stringstream s;
  s << in.rdbuf();
  const boost::json::value v = boost::json::parse(s.str());
  auto ids = [&](const char* key) {
    std::vector<int32_t> out;
    for (const auto& x : v.at(key).as_array()) out.push_back(static_cast<int32_t>(x.as_int64()));
    return out;
  };
  return {ids("ids"), ids("greedy_prompt"), ids("greedy_continuation")};
}

}  // namespace strata::test
