// tests/launcher/cpu_threads_test.cpp: the default thread count leaves busy cores alone and shares the
// free ones among the ranks of a host (cpu_share, the pure part of launcher/cpu_threads.h).
#include <gtest/gtest.h>

#include "launcher/cpu_threads.h"

namespace strata::launcher {
namespace {

TEST(CpuShare, IdleHostGivesEveryCoreToOneRank) {
  const CpuShare s = cpu_share(16, 0.2, 1);
  EXPECT_EQ(s.threads, 16);
  EXPECT_EQ(s.busy, 0);
}

TEST(CpuShare, BusyCoresAreLeftToTheWorkThatHoldsThem) {
  EXPECT_EQ(cpu_share(16, 6.4, 1).threads, 10);
  EXPECT_EQ(cpu_share(2, 1.7, 1).threads, 1);  // the loaded 2-core case of issue 26: one thread, not two
}

TEST(CpuShare, RanksOnAHostSplitTheFreeCores) {
  EXPECT_EQ(cpu_share(16, 0, 4).threads, 4);
  EXPECT_EQ(cpu_share(16, 8, 4).threads, 2);
  EXPECT_EQ(cpu_share(16, 0, 3).threads, 5);
}

TEST(CpuShare, ABoundRankUsesItsOwnCores) {
  // mpirun --bind-to core: one core of 16 per rank; the mask is the rank's share, not split again.
  const CpuShare one = cpu_share(1, 0.0, 2, 16);
  EXPECT_TRUE(one.bound);
  EXPECT_EQ(one.threads, 1);
  EXPECT_EQ(cpu_share(4, 0.0, 4, 16).threads, 4);
  EXPECT_EQ(cpu_share(4, 8.0, 4, 16).threads, 2);  // half the host busy: half of its 4 cores
}

TEST(CpuShare, EveryRankKeepsAtLeastOneThread) {
  EXPECT_EQ(cpu_share(4, 30, 1).threads, 1);  // a load above the core count
  EXPECT_EQ(cpu_share(2, 0, 4).threads, 1);   // more ranks than cores
  EXPECT_EQ(cpu_share(0, 0, 0).threads, 1);   // nothing known
}

}  // namespace
}  // namespace strata::launcher
