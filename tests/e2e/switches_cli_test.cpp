// tests/e2e/switches_cli_test.cpp: the strata executable's switches (README.md's table) on a CPU build or
// device: --kernel-options with an unknown key ends the command with an error naming it and the valid keys;
// valid keys are accepted and ignored on the CPU (same ids as without them, and a note says so);
// --cuda-graphs takes on or off; bench decode --skip-all-reduces needs a plan; --cpu-repack off reads the
// mapped quantized weights as they are and decodes what the interleaved copy and the f32 model decode.
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace strata {
namespace {

std::string ids_line(const std::string& out) {
  const size_t at = out.find("ids:");
  return at == std::string::npos ? "" : out.substr(at, out.find('\n', at) - at);
}

TEST(SwitchesCli, KernelOptionsUnknownKeyIsAnErrorListingTheValidKeys) {
  const std::string model = test::fixture("hf/llama_mha");
  const auto r = test::run_command(test::strata_binary() + " generate --model " + model +
                                   " --prompt-ids '1 5 9' -n 2 --kernel-options fuse_swiglu=0,gemv_ks=2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("unknown key 'gemv_ks'; valid keys: gemv_max_rows, gemv_rolling"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

TEST(SwitchesCli, KernelOptionsCpuDeviceIgnoresValidKeysWithANote) {
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

TEST(SwitchesCli, BadCudaGraphsValueAndSkipWithoutAPlanAreErrors) {
  const std::string model = test::fixture("hf/llama_mha");
  const auto graphs = test::run_command(test::strata_binary() + " generate --model " + model +
                                        " --prompt-ids '1 5' -n 2 --cuda-graphs maybe");
  EXPECT_NE(graphs.exit_code, 0) << graphs.output;
  EXPECT_NE(graphs.output.find("--cuda-graphs must be on or off, got 'maybe'"), std::string::npos) << graphs.output;
  const auto skip = test::run_command(test::strata_binary() + " bench decode --model " + model +
                                      " --batch 1 --prompt-len 4 -n 2 --skip-all-reduces");
  EXPECT_NE(skip.exit_code, 0) << skip.output;
  EXPECT_NE(skip.output.find("--skip-all-reduces skips a plan's tensor-parallel all-reduces; it needs --plan"),
            std::string::npos)
      << skip.output;
}

TEST(SwitchesCli, CpuRepackOffDecodesWhatTheInterleavedCopyAndTheF32ModelDecode) {
  const std::string f32 = test::shared_model("stories260K/stories260K.gguf");
  const std::string q8 = test::temp_dir("switches_cli_repack") + "/stories260K-q8_0.gguf";
  const auto made = test::run_command(test::strata_binary() + " quantize --model " + f32 + " --type q8_0 " +
                                      "--f16-fallback --force --out " + q8);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string args = " generate --prompt 'Once upon a time' -n 24 --print-ids --quiet --model ";
  const auto reference = test::run_command(test::strata_binary() + args + f32);
  const auto on = test::run_command(test::strata_binary() + args + q8 + " --cpu-repack on");
  const auto off = test::run_command(test::strata_binary() + args + q8 + " --cpu-repack off");
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  ASSERT_EQ(on.exit_code, 0) << on.output;
  ASSERT_EQ(off.exit_code, 0) << off.output;
  EXPECT_FALSE(ids_line(reference.output).empty()) << reference.output;
  EXPECT_EQ(ids_line(on.output), ids_line(reference.output));
  EXPECT_EQ(ids_line(off.output), ids_line(reference.output));
  const auto bad = test::run_command(test::strata_binary() + args + q8 + " --cpu-repack maybe");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("--cpu-repack must be on or off, got 'maybe'"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace strata
