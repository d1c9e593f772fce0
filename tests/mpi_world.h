// tests/mpi_world.h: one world communicator (and so one MPI session) alive for a whole *_mpi_test
// binary. MPI cannot be initialised twice in a process, so the cases' own RankRuntimes and splits
// reuse this one; it goes away after the last case.
#pragma once
#include <gtest/gtest.h>

#include <memory>

#include "comm/bootstrap.h"

namespace strata::test {

inline comm::Communicator*& world_slot() {
  static comm::Communicator* world = nullptr;
  return world;
}

class WorldEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    world_ = comm::make_world_communicator(comm::CommConfig{});
    world_slot() = world_.get();
  }
  void TearDown() override {
    world_slot() = nullptr;
    world_.reset();
  }

 private:
  std::unique_ptr<comm::Communicator> world_;
};

inline const bool kWorldEnvironmentRegistered =
    (::testing::AddGlobalTestEnvironment(new WorldEnvironment), true);

}  // namespace strata::test
