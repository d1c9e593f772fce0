// tests/launcher/progress_test.cpp: the progress line of slow work: a line with the caller's status
// while it runs and a closing "done" line; nothing when disabled or when the work ends within the
// quiet time.
#include <gtest/gtest.h>

#include <string>

#include "launcher/progress.h"
#include "test_util.h"

namespace strata::launcher {
namespace {

TEST(Progress, PrintsTheStatusThenDone) {
  testing::internal::CaptureStderr();
  {
    const Progress p("loading m", [] { return std::string("1.0 GiB resident"); }, true, std::chrono::milliseconds(0));
  }
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("loading m: 0 s, 1.0 GiB resident"), std::string::npos) << out;
  EXPECT_NE(out.find("loading m: done in"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n') << out;
}

TEST(Progress, SilentWhenDisabledOrQuick) {
  testing::internal::CaptureStderr();
  { const Progress p("off", [] { return std::string("x"); }, false, std::chrono::milliseconds(0)); }
  { const Progress p("quick", [] { return std::string("x"); }, true, std::chrono::hours(1)); }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Progress, PathBytesOfAFileAndADirectory) {
  EXPECT_EQ(path_bytes("/nonexistent/path"), 0);
  const std::string dir = test::fixture("hf/llama_mha");
  const int64_t config = path_bytes(dir + "/config.json"), weights = path_bytes(dir + "/model.safetensors");
  EXPECT_GT(config, 0);
  EXPECT_GT(weights, 0);
  EXPECT_GE(path_bytes(dir), config + weights);
}

}  // namespace
}  // namespace strata::launcher
