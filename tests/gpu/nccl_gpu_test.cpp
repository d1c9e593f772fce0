// tests/gpu/nccl_gpu_test.cpp: the NCCL communicator with one rank on one GPU (NCCL refuses two ranks
// on one device; multi-GPU runs belong to the multi-GPU issue): every operation against its closed
// form, ordered after work queued on the backend's compute stream.
#include <gtest/gtest.h>

#include <vector>

#include "comm/communicator.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#ifdef STRATA_HAVE_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

#ifdef STRATA_HAVE_NCCL
namespace strata {
namespace {

class NcclOneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    backend_ = make_cuda_backend(0);
    bootstrap_ = comm::make_self_communicator(comm::CommConfig{});
    comm::NcclOptions o;
    o.compute_stream = cuda_backend_stream(*backend_);
    o.timeout_s = 30;
    nccl_ = comm::make_nccl_communicator(*bootstrap_, o, "tp[test]");
  }
  Tensor device_f32(const std::vector<float>& v) {
    Tensor d = backend_->alloc({static_cast<int64_t>(v.size())}, DType::kF32);
    backend_->copy(Tensor::view(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, DType::kF32), d);
    return d;
  }
  std::vector<float> host(const Tensor& d) {
    std::vector<float> v(static_cast<size_t>(d.numel()));
    Tensor h = Tensor::view(v.data(), {d.numel()}, DType::kF32);
    backend_->copy(d, h);
    return v;
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<comm::Communicator> bootstrap_, nccl_;
};

TEST_F(NcclOneRank, CollectivesOfOneRankAreTheIdentity) {
  EXPECT_EQ(nccl_->size(), 1);
  EXPECT_EQ(nccl_->rank(), 0);
  Tensor t = device_f32({1.5f, -2.f, 3.25f});
  nccl_->all_reduce(t);
  EXPECT_EQ(host(t), (std::vector<float>{1.5f, -2.f, 3.25f}));
  nccl_->broadcast(t, 0);
  EXPECT_EQ(host(t), (std::vector<float>{1.5f, -2.f, 3.25f}));
  Tensor out = backend_->alloc({3}, DType::kF32);
  nccl_->all_gather(t, out);
  EXPECT_EQ(host(out), (std::vector<float>{1.5f, -2.f, 3.25f}));
  nccl_->barrier();
}

TEST_F(NcclOneRank, AsyncAllReduceOverlapsQueuedWorkAndStaysOrdered) {
  // Queue compute (an add on the compute stream), then the all-reduce: the collective must see the
  // added values because it waits for the compute stream's event.
  Tensor a = device_f32(std::vector<float>(1 << 20, 1.f));
  const Tensor b = device_f32(std::vector<float>(1 << 20, 2.f));
  backend_->add(a, b);
  auto work = nccl_->all_reduce_async(a, comm::ReduceOp::kSum);
  work->wait();
  const std::vector<float> v = host(a);
  EXPECT_EQ(v.front(), 3.f);
  EXPECT_EQ(v.back(), 3.f);
}

TEST_F(NcclOneRank, HostTensorsAreRejectedWithAClearMessage) {
  std::vector<float> v = {1.f};
  Tensor h = Tensor::view(v.data(), {1}, DType::kF32);
  try {
    nccl_->all_reduce(h);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device tensors"), std::string::npos) << e.what();
  }
}

TEST_F(NcclOneRank, SplitMakesAWorkingSubGroup) {
  auto child = nccl_->split(0, 0, "child");
  ASSERT_NE(child, nullptr);
  Tensor t = device_f32({4.f});
  child->all_reduce(t);
  EXPECT_EQ(host(t), std::vector<float>{4.f});
}

}  // namespace
}  // namespace strata
#else
TEST(NcclOneRank, NotBuilt) { GTEST_SKIP() << "this build has no NCCL"; }
#endif
