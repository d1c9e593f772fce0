// tests/e2e/cli_test.cpp: the strata executable as users run it: generation on stories260K, the
// multi-rank run equal to the single-rank one, and the clear errors of bad input.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "test_util.h"

namespace strata {
namespace {

std::string strata() { return test::strata_binary(); }

std::string ids_line(const std::string& output) {
  const auto pos = output.find("ids:");
  return pos == std::string::npos ? "" : output.substr(pos, output.find('\n', pos) - pos);
}

TEST(Cli, GenerateStories260KTellsRunCsStory) {
  const std::string model = test::shared_model("stories260K/stories260K.bin");
  if (model.empty()) GTEST_SKIP() << "../shared/models is absent";
  const auto r = test::run_command(strata() + " generate --model " + model + " --prompt 'Once upon a time' -n 30");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Once upon a time, there was a little girl named Lily. She loved to play outside in the park"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("decode:"), std::string::npos);
  EXPECT_NE(r.output.find("tok/s"), std::string::npos);
}

TEST(Cli, TensorAndPipelineParallelRunPrintsTheSingleRankIds) {
  const std::string model = test::fixture("hf/llama_gqa_untied");
  const std::string plan = test::temp_dir("cli") + "/tp2pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n  pipeline: 2\n", model.c_str());
  std::fclose(f);
  const std::string args = " --prompt-ids '1 5 9 33 2 7' -n 12 --print-ids";
  const auto single = test::run_command(strata() + " generate --model " + model + args);
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const auto multi = test::run_command(test::mpirun(4) + strata() + " generate --plan " + plan + args);
  ASSERT_EQ(multi.exit_code, 0) << multi.output;
  EXPECT_FALSE(ids_line(single.output).empty()) << single.output;
  EXPECT_EQ(ids_line(multi.output), ids_line(single.output)) << multi.output;
  // Under mpirun the rates follow the output on stdout, on a line of their own.
  EXPECT_NE(multi.output.find("\nprefill: "), std::string::npos) << multi.output;
}

TEST(Cli, EnvironmentLaunchWithoutMpiRunsOverTcp) {
  // torchrun-style: RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, no mpirun; the ranks meet through the
  // TCP store of rank 0 and talk over the TCP communicator.
  const std::string model = test::fixture("hf/llama_gqa_untied");
  const std::string plan = test::temp_dir("cli") + "/env-tp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\ncomm:\n  timeout_s: 30\n", model.c_str());
  std::fclose(f);
  const std::string args = " generate --plan " + plan + " --prompt-ids '1 5 9 33' -n 10 --print-ids";
  const int port = test::free_port();
  ASSERT_GT(port, 0);
  const std::string env = "env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(port) + " WORLD_SIZE=2 STRATA_STORE_SECRET=cli-test-job ";
  const auto r = test::run_command("sh -c \"" + env + "RANK=1 " + strata() + args + " >/dev/null 2>&1 & " + env +
                                       "RANK=0 " + strata() + args + "; s=\\$?; wait; exit \\$s\"",
                                   120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto single = test::run_command(strata() + " generate --model " + model + " --prompt-ids '1 5 9 33' -n 10 --print-ids");
  EXPECT_EQ(ids_line(r.output), ids_line(single.output)) << r.output;
  EXPECT_FALSE(ids_line(r.output).empty());
}

TEST(Cli, RankThatDiesEndsTheJobWithAnError) {
  const std::string model = test::fixture("hf/llama_gqa_untied");
  const std::string plan = test::temp_dir("cli") + "/pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  pipeline: 2\ncomm:\n  timeout_s: 5\n", model.c_str());
  std::fclose(f);
  for (const char* mode : {"exit", "hang"}) {
    const auto r = test::run_command("env STRATA_FAULT_MODE=" + std::string(mode) +
                                         " STRATA_FAULT_RANK=1 STRATA_FAULT_TOKEN=3 " + test::mpirun(2) +
                                         "-x STRATA_FAULT_MODE -x STRATA_FAULT_RANK -x STRATA_FAULT_TOKEN " +
                                         test::strata_fault_binary() +
                                         " generate --plan " + plan + " --prompt-ids '1 2 3' -n 40 --quiet",
                                     60);
    EXPECT_NE(r.exit_code, 0) << mode << ": " << r.output;
    EXPECT_NE(r.exit_code, 124) << mode << " ran into the test's wall-clock limit: " << r.output;
    if (std::string(mode) == "hang") {  // the survivor names what it waited for
      EXPECT_NE(r.output.find("timed out"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("replica[dp0]"), std::string::npos) << r.output;
    }
  }
}

struct BadInput {
  const char* name;
  std::string args;
  std::string expect;
};

class CliErrors : public ::testing::TestWithParam<BadInput> {};

TEST_P(CliErrors, ExitNonZeroWithAClearMessage) {
  const auto r = test::run_command(strata() + " " + GetParam().args);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(GetParam().expect), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

const std::string kFixture = test::fixture("hf/llama_mha");
INSTANTIATE_TEST_SUITE_P(
    Cases, CliErrors,
    ::testing::Values(
        BadInput{"unknown_command", "frobnicate", "unknown command 'frobnicate'"},
        BadInput{"unknown_flag", "generate --model x --temprature 1", "did you mean --temperature?"},
        BadInput{"missing_model", "generate --model /nonexistent/model --prompt-ids 1", "/nonexistent/model"},
        BadInput{"n_out_of_range", "generate --model " + kFixture + " --prompt-ids 1 -n 0", "out of range"},
        BadInput{"n_past_context", "generate --model " + kFixture + " --prompt-ids 1 -n 100000",
                 "exceeds the model's context"},
        BadInput{"text_without_tokenizer", "generate --model " + kFixture + " --prompt hello", "has no tokenizer"},
        BadInput{"id_outside_vocab", "generate --model " + kFixture + " --prompt-ids '1 99999' -n 2",
                 "outside the vocabulary"},
        BadInput{"bad_ids", "generate --model " + kFixture + " --prompt-ids 'one two'", "token ids must be"},
        BadInput{"plan_world_mismatch", "generate --plan " + test::source_dir() + "/configs/tiny-tp2.yaml --prompt-ids 1",
                 "launch it with mpirun -np 2"},
        BadInput{"unknown_command_suggests", "generte", "did you mean 'generate'?"},
        BadInput{"unknown_benchmark_suggests", "bench decod", "did you mean 'decode'?"},
        BadInput{"not_a_checkpoint", "generate --model " + test::source_dir() + "/README.md --prompt-ids 1",
                 "not a model checkpoint"},
        BadInput{"quantize_unknown_type", "quantize --model " + kFixture + " --type q7_k --out x.gguf",
                 "unknown quantization type 'q7_k'; choose one of: f32, f16, bf16, q8_0"},
        BadInput{"quantize_output_exists", "quantize --model " + kFixture + " --type q8_0 --out " +
                 test::source_dir() + "/tests/fixtures/quantize/reference.txt", "must end in .gguf"},
        BadInput{"quantize_calibrated_without_text", "quantize --model " + kFixture + " --type w8a8-int8 --out x",
                 "--type w8a8-int8 needs --calibration FILE.txt"},
        BadInput{"quantize_bad_activation_scales", "quantize --model " + kFixture + " --type fp8 --activation-scales "
                 "sometimes --out x", "--activation-scales must be dynamic or static"}),
    [](const auto& info) { return std::string(info.param.name); });

// -h and --help answer every command and benchmark with its usage on stdout and exit 0, running
// nothing; a command's own flags come before the shared groups, which have headings.
TEST(Cli, HelpOnEveryCommandRunsNothing) {
  for (const std::string command : {"-h", "--help", "generate -h", "generate --help", "serve -h", "plan -h",
                                    "make-model -h", "quantize -h", "tokenize -h", "logits -h", "perplexity -h", "bench -h",
                                    "bench --help", "bench memory --help", "bench decode -h", "bench serve -h",
                                    "bench scaling -h", "bench disk -h", "generate --model /nonexistent -h"}) {
    const auto r = test::run_command(strata() + " " + command);
    EXPECT_EQ(r.exit_code, 0) << command << ": " << r.output;
    EXPECT_NE(r.output.find("usage: strata"), std::string::npos) << command << ": " << r.output;
    EXPECT_EQ(r.output.find("copy_gbs"), std::string::npos) << command << " ran the benchmark: " << r.output;
  }
  const std::string help = test::run_command(strata() + " generate --help").output;
  const size_t own = help.find("--prompt "), model = help.find("model and placement:"),
               offload = help.find("weight offload"), budget = help.find("--device-budget");
  ASSERT_NE(own, std::string::npos) << help;
  ASSERT_NE(model, std::string::npos) << help;
  ASSERT_NE(offload, std::string::npos) << help;
  EXPECT_LT(own, model) << help;
  EXPECT_LT(model, offload) << help;
  EXPECT_LT(offload, budget) << help;
}

// An error says what is wrong once: no repeated "strata generate:" prefix, no source path.
TEST(Cli, ErrorsSayTheirMessageOnceWithoutASourcePath) {
  const auto r = test::run_command(strata() + " generate --model x --temprature 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.output.find("strata generate:"), r.output.rfind("strata generate:")) << r.output;
  EXPECT_EQ(r.output.find(".cpp:"), std::string::npos) << r.output;
  const auto missing = test::run_command(strata() + " generate --model /nonexistent/model --prompt-ids 1");
  EXPECT_EQ(missing.output.find(".cpp:"), std::string::npos) << missing.output;
  EXPECT_EQ(missing.output.back(), '\n');
}

// plan --check --model checks against that checkpoint: its path replaces the plan's model and shape in
// the report, and without model.dtype the weights are sized in the checkpoint's dtype (f32 here, the
// fixture's safetensors), not an assumed bf16.
// strata quantize writes a GGUF that generate loads; a second run refuses to overwrite it without --force.
TEST(Cli, QuantizeWritesAGgufThatLoads) {
  const std::string dir = test::temp_dir("cli_quantize");
  std::filesystem::remove(dir + "/q.gguf");  // from an earlier run
  ASSERT_EQ(test::run_command(strata() + " make-model --preset tiny --dtype bf16 --out " + dir + "/src").exit_code, 0);
  const std::string cmd = strata() + " quantize --model " + dir + "/src --type q4_k_m --out " + dir + "/q.gguf";
  const auto r = test::run_command(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote " + dir + "/q.gguf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bits per weight"), std::string::npos) << r.output;
  const auto g = test::run_command(strata() + " generate --model " + dir + "/q.gguf --prompt-ids '1 5 9' -n 4 --print-ids");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  const auto again = test::run_command(cmd);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find("--force"), std::string::npos) << again.output;
  EXPECT_EQ(test::run_command(cmd + " --force").exit_code, 0);
}

TEST(Cli, PlanCheckUsesTheCheckpointGivenAndItsDtype) {
  const std::string model = test::fixture("hf/llama_mha");
  const std::string plan = test::temp_dir("cli") + "/shape-tp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: /elsewhere/model\n  shape: tiny\nparallel:\n  tensor: 2\n");
  std::fclose(f);
  const auto r = test::run_command(strata() + " plan --check " + plan + " --model " + model);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checked against " + model + " (safetensors)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("weights f32 (not in the plan: the checkpoint's, safetensors)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("/elsewhere/model"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("shape tiny"), std::string::npos) << r.output;
  // The model's numbers, not the tiny preset's: the fixture's hidden size is 64.
  EXPECT_NE(r.output.find("hidden 64"), std::string::npos) << r.output;
  // Without --model the preset shape is checked, its dtype assumed.
  const auto shape = test::run_command(strata() + " plan --check " + plan);
  ASSERT_EQ(shape.exit_code, 0) << shape.output;
  EXPECT_NE(shape.output.find("weights bf16 (not in the plan: assumed)"), std::string::npos) << shape.output;
}

// A plan with errors prints each on its own line, the last one ended too.
TEST(Cli, PlanErrorsEndWithANewline) {
  const std::string plan = test::temp_dir("cli") + "/bad.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  shape: tiny\nparallel:\n  tensr: 2\n");
  std::fclose(f);
  const auto r = test::run_command(strata() + " plan --check " + plan);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("tensr"), std::string::npos) << r.output;
  ASSERT_FALSE(r.output.empty());
  EXPECT_EQ(r.output.back(), '\n') << r.output;
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// `strata bench disk` reads every byte of the file at every depth asked for (a file whose size is not a
// multiple of the block or of the alignment), and names the flag when the depth list is bad.
TEST(Cli, BenchDiskReadsTheWholeFileAtEveryDepth) {
  const std::string path = test::temp_dir("cli") + "/disk.bin";
  const size_t size = (size_t{3} << 20) + 123;
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::vector<char> bytes(size, 'x');
    ASSERT_EQ(std::fwrite(bytes.data(), 1, size, f), size);
    std::fclose(f);
  }
  const std::string strata = test::strata_binary();
  const auto buffered = test::run_command(strata + " bench disk --file " + path + " --threads 1,3 --block-mib 1 --buffered");
  ASSERT_EQ(buffered.exit_code, 0) << buffered.output;
  EXPECT_NE(buffered.output.find("\"bytes\": " + std::to_string(size)), std::string::npos) << buffered.output;
  EXPECT_NE(buffered.output.find("{\"threads\": 1,"), std::string::npos) << buffered.output;
  EXPECT_NE(buffered.output.find("{\"threads\": 3,"), std::string::npos) << buffered.output;
  // O_DIRECT: works where the file system allows it (not tmpfs); otherwise the error says what to do.
  const auto direct = test::run_command(strata + " bench disk --file " + path + " --threads 2 --block-mib 1");
  if (direct.exit_code == 0) {
    EXPECT_NE(direct.output.find("\"bytes\": " + std::to_string(size)), std::string::npos) << direct.output;
    EXPECT_NE(direct.output.find("\"direct\": true"), std::string::npos) << direct.output;
  } else {
    EXPECT_NE(direct.output.find("O_DIRECT"), std::string::npos) << direct.output;
  }
  const auto bad = test::run_command(strata + " bench disk --file " + path + " --threads 0,x");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--threads"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace strata
