// tests/offload/residency_budget_test.cpp: a budget given as a share of memory becomes bytes in one
// place (offload::share_bytes): the plan's Budget, the residency config the ranks place with and
// --device-budget all agree, by hand-computed shares.
#include <gtest/gtest.h>

#include "offload/residency.h"
#include "parallel/plan.h"

namespace strata {
namespace {

TEST(ShareBytes, IsTheFloorOfTheShare) {
  EXPECT_EQ(offload::share_bytes(1000, 40), 400);
  EXPECT_EQ(offload::share_bytes(999, 12.5), 124);  // 124.875 rounds down: a budget never exceeds its share
  EXPECT_EQ(offload::share_bytes(int64_t{80} << 30, 100), int64_t{80} << 30);
}

TEST(ShareBytes, DeviceBudgetBytesPrefersBytesThenTheShare) {
  offload::ResidencyConfig c;
  EXPECT_EQ(c.device_budget_bytes(1000), -1);  // neither: no limit
  c.device_budget_percent = 40;
  EXPECT_EQ(c.device_budget_bytes(1000), 400);
  EXPECT_EQ(c.device_budget_bytes(0), -1);  // device size unknown: nothing to take a share of
  c.device_budget = 123;
  EXPECT_EQ(c.device_budget_bytes(1000), 123);
}

TEST(ShareBytes, PlanBudgetsResolveTheSameWay) {
  parallel::Budget b;
  b.percent = 12.5;
  EXPECT_EQ(b.resolve(999), offload::share_bytes(999, 12.5));
  EXPECT_EQ(b.resolve(0), -1);
  b.bytes = 7;
  EXPECT_EQ(b.resolve(999), 7);
}

}  // namespace
}  // namespace strata
