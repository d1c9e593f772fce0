// tests/e2e/kernel_options_cli_test.cpp: the strata executable's --kernel-options on a CPU build or device:
// an unknown key ends the command with an error naming it and the valid keys; valid keys are accepted and
// ignored on the CPU (same ids as without them, and a note says so).
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace strata {
namespace {

std::string ids_line(const std::string& out) {
  const size_t at = out.find("ids:");
  return at == std::string::npos ? "" : out.substr(at, out.find('\n', at) - at);
}

TEST(KernelOptionsCli, UnknownKeyIsAnErrorListingTheValidKeys) {
  const std::string model = test::fixture("hf/llama_mha");
  const auto r = test::run_command(test::strata_binary() + " generate --model " + model +
                                   " --prompt-ids '1 5 9' -n 2 --kernel-options fuse_swiglu=0,gemv_ks=2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("unknown key 'gemv_ks'; valid keys: gemv_max_rows, gemv_rolling"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

TEST(KernelOptionsCli, CpuDeviceIgnoresValidKeysWithANote) {
  const std::string model = test::fixture("hf/llama_mha");
  const std::string args = " generate --model " + model + " --prompt-ids '1 5 9 33' -n 8 --print-ids --quiet";
  const auto plain = test::run_command(test::strata_binary() + args);
  const auto with = test::run_command(test::strata_binary() + args + " --kernel-options fuse_swiglu=0,pdl=0");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(with.exit_code, 0) << with.output;
  EXPECT_FALSE(ids_line(plain.output).empty()) << plain.output;
  EXPECT_EQ(ids_line(with.output), ids_line(plain.output));
  EXPECT_NE(with.output.find("ignored on the CPU"), std::string::npos) << with.output;
}

}  // namespace
}  // namespace strata
