// tests/comm/comm_checks.h: transport-independent checks of a Communicator against closed-form
// results, shared by the MPI test (under mpirun) and the TCP test (ranks as threads). Header-only
// because tests are discovered one .cpp per binary.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/error.h"

namespace strata::comm::testing {

inline Tensor filled_f32(int64_t n, float (*f)(int, int64_t), int rank) {
  Tensor t = Tensor::empty({n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = f(rank, i);
  return t;
}

// all_reduce of x[i] = rank + i: sum = n(n-1)/2 + n*i, max = n-1+i, for every reducible dtype.
inline void check_all_reduce(Communicator& c) {
  const int n = c.size(), r = c.rank();
  const int64_t len = 37;  // odd, so no chunking assumption hides
  {
    Tensor t = Tensor::empty({len}, DType::kF32);
    for (int64_t i = 0; i < len; ++i) t.data<float>()[i] = static_cast<float>(r + i);
    c.all_reduce(t, ReduceOp::kSum);
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(t.data<float>()[i], n * (n - 1) / 2.0f + n * i) << "f32 sum at " << i;
  }
  {
    Tensor t = Tensor::empty({len}, DType::kF32);
    for (int64_t i = 0; i < len; ++i) t.data<float>()[i] = static_cast<float>(r + i) * (i % 2 ? -1.f : 1.f);
    c.all_reduce(t, ReduceOp::kMax);
    for (int64_t i = 0; i < len; ++i) {
      const float expect = i % 2 ? -static_cast<float>(i) : static_cast<float>(n - 1 + i);
      ASSERT_EQ(t.data<float>()[i], expect) << "f32 max at " << i;
    }
  }
  {
    Tensor t = Tensor::empty({len}, DType::kI32);
    for (int64_t i = 0; i < len; ++i) t.data<int32_t>()[i] = static_cast<int32_t>(1000 * r + i);
    c.all_reduce(t, ReduceOp::kSum);
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(t.data<int32_t>()[i], 1000 * n * (n - 1) / 2 + n * i);
    c.all_reduce(t, ReduceOp::kMax);  // already equal everywhere: max is the identity
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(t.data<int32_t>()[i], 1000 * n * (n - 1) / 2 + n * i);
  }
  // Halves: x = rank + i/4 is exact in f16 and bf16 for these ranges, and so is the sum.
  for (DType dt : {DType::kF16, DType::kBF16}) {
    const bool h = dt == DType::kF16;
    Tensor t = Tensor::empty({len}, dt);
    for (int64_t i = 0; i < len; ++i)
      t.data<uint16_t>()[i] = h ? f32_to_f16(r + i / 4.0f) : f32_to_bf16(r + i / 4.0f);
    c.all_reduce(t, ReduceOp::kSum);
    for (int64_t i = 0; i < len; ++i) {
      const float got = h ? f16_to_f32(t.data<uint16_t>()[i]) : bf16_to_f32(t.data<uint16_t>()[i]);
      ASSERT_EQ(got, n * (n - 1) / 2.0f + n * (i / 4.0f)) << dtype_name(dt) << " sum at " << i;
    }
  }
  // Rounded once: rank 0 gives 1, the others 2^-9 each (below bf16's half-ulp at 1, 2^-8). Summed in
  // bf16 step by step every addition would round back to 1; summed in f32 and rounded at the end the
  // result is bf16(1 + (n-1) * 2^-9), which is 1 + 2^-7 for n = 4.
  {
    Tensor t = Tensor::empty({1}, DType::kBF16);
    t.data<uint16_t>()[0] = f32_to_bf16(r == 0 ? 1.0f : 1.0f / 512);
    c.all_reduce(t);
    ASSERT_EQ(bf16_to_f32(t.data<uint16_t>()[0]), bf16_to_f32(f32_to_bf16(1.0f + (n - 1) / 512.0f)));
  }
}

// out = concatenation in rank order; works on any dtype (here i8 and f32).
inline void check_all_gather(Communicator& c) {
  const int n = c.size(), r = c.rank();
  Tensor in = Tensor::empty({3}, DType::kF32);
  for (int j = 0; j < 3; ++j) in.data<float>()[j] = static_cast<float>(10 * r + j);
  Tensor out = Tensor::zeros({n, 3}, DType::kF32);
  c.all_gather(in, out);
  for (int k = 0; k < n; ++k)
    for (int j = 0; j < 3; ++j) ASSERT_EQ(out.data<float>()[3 * k + j], 10.0f * k + j);

  Tensor in8 = Tensor::empty({5}, DType::kI8);
  for (int j = 0; j < 5; ++j) in8.data<int8_t>()[j] = static_cast<int8_t>(r * 5 + j);
  Tensor out8 = Tensor::zeros({5 * n}, DType::kI8);
  c.all_gather(in8, out8);
  for (int k = 0; k < 5 * n; ++k) ASSERT_EQ(out8.data<int8_t>()[k], k);

  // In place: each rank's input already sits in its slice of the output.
  Tensor shared = Tensor::zeros({n, 2}, DType::kI32);
  Tensor mine = shared.rows(r, 1);
  mine.data<int32_t>()[0] = r;
  mine.data<int32_t>()[1] = -r;
  c.all_gather(mine, shared);
  for (int k = 0; k < n; ++k) {
    ASSERT_EQ(shared.data<int32_t>()[2 * k], k);
    ASSERT_EQ(shared.data<int32_t>()[2 * k + 1], -k);
  }
}

// in[k] = rank + k over n*m elements; out[j] on rank q = sum_r (r + q*m + j) = n(n-1)/2 + n(q*m + j).
inline void check_reduce_scatter(Communicator& c) {
  const int n = c.size(), q = c.rank();
  const int64_t m = 6;
  for (DType dt : {DType::kF32, DType::kBF16, DType::kI32}) {
    Tensor in = Tensor::empty({n * m}, dt);
    for (int64_t k = 0; k < n * m; ++k) {
      const float v = static_cast<float>(q + k);
      if (dt == DType::kF32) in.data<float>()[k] = v;
      if (dt == DType::kBF16) in.data<uint16_t>()[k] = f32_to_bf16(v);
      if (dt == DType::kI32) in.data<int32_t>()[k] = static_cast<int32_t>(v);
    }
    Tensor out = Tensor::zeros({m}, dt);
    c.reduce_scatter(in, out);
    for (int64_t j = 0; j < m; ++j) {
      const float expect = n * (n - 1) / 2.0f + n * static_cast<float>(q * m + j);
      float got = 0;
      if (dt == DType::kF32) got = out.data<float>()[j];
      if (dt == DType::kBF16) got = bf16_to_f32(out.data<uint16_t>()[j]);
      if (dt == DType::kI32) got = static_cast<float>(out.data<int32_t>()[j]);
      ASSERT_EQ(got, expect) << dtype_name(dt) << " at " << j;
    }
  }
}

inline void check_broadcast(Communicator& c) {
  for (int root = 0; root < c.size(); ++root) {
    Tensor t = Tensor::empty({4}, DType::kI32);
    for (int j = 0; j < 4; ++j) t.data<int32_t>()[j] = c.rank() == root ? 100 * root + j : -1;
    c.broadcast(t, root);
    for (int j = 0; j < 4; ++j) ASSERT_EQ(t.data<int32_t>()[j], 100 * root + j) << "root " << root;
  }
}

// A ring exchange with two tags sent in one order and received in the other: matching is by tag.
inline void check_send_recv(Communicator& c) {
  const int n = c.size(), r = c.rank();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  Tensor a = Tensor::empty({8}, DType::kF32), b = Tensor::empty({2}, DType::kI32);
  for (int j = 0; j < 8; ++j) a.data<float>()[j] = static_cast<float>(r * 8 + j);
  b.data<int32_t>()[0] = r;
  b.data<int32_t>()[1] = 7;
  auto send_a = c.send_async(a, next, 7);
  auto send_b = c.send_async(b, next, 8);
  Tensor got_b = Tensor::zeros({2}, DType::kI32), got_a = Tensor::zeros({8}, DType::kF32);
  auto recv_b = c.recv_async(got_b, prev, 8);
  c.recv(got_a, prev, 7);
  recv_b->wait();
  send_a->wait();
  send_b->wait();
  for (int j = 0; j < 8; ++j) ASSERT_EQ(got_a.data<float>()[j], static_cast<float>(prev * 8 + j));
  ASSERT_EQ(got_b.data<int32_t>()[0], prev);
  ASSERT_EQ(got_b.data<int32_t>()[1], 7);
  // Pairs (0,1), (2,3), ...: blocking send on the lower rank, blocking recv on the upper.
  if (n % 2 == 0) {
    Tensor t = Tensor::empty({3}, DType::kF16);
    if (r % 2 == 0) {
      for (int j = 0; j < 3; ++j) t.data<uint16_t>()[j] = f32_to_f16(r + 0.5f * j);
      c.send(t, r + 1, 3);
    } else {
      c.recv(t, r - 1, 3);
      for (int j = 0; j < 3; ++j) ASSERT_EQ(f16_to_f32(t.data<uint16_t>()[j]), (r - 1) + 0.5f * j);
    }
  }
}

// Two ops in flight at once, waited in the opposite order; test() polls to completion.
inline void check_async_overlap(Communicator& c) {
  const int n = c.size(), r = c.rank();
  Tensor sum = Tensor::empty({1000}, DType::kF32);
  for (int i = 0; i < 1000; ++i) sum.data<float>()[i] = 1.0f;
  Tensor in = Tensor::empty({1}, DType::kI32), out = Tensor::zeros({n}, DType::kI32);
  in.data<int32_t>()[0] = r * r;
  auto w1 = c.all_reduce_async(sum, ReduceOp::kSum);
  auto w2 = c.all_gather_async(in, out);
  auto w3 = c.barrier_async();
  w2->wait();
  while (!w1->test()) {
  }
  w3->wait();
  EXPECT_TRUE(w1->test());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sum.data<float>()[i], static_cast<float>(n));
  for (int k = 0; k < n; ++k) ASSERT_EQ(out.data<int32_t>()[k], k * k);
}

// A 2 x (n/2) grid: rows share rank / cols, columns share rank % cols. Sums of world ranks per group.
inline void check_split_grid(Communicator& c) {
  const int n = c.size(), r = c.rank();
  if (n % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  const int cols = n / 2, row = r / cols, col = r % cols;
  auto rows = c.split(row, col, "row" + std::to_string(row));
  auto columns = c.split(col, -row, "col" + std::to_string(col));  // negative key: reversed order
  ASSERT_TRUE(rows && columns);
  EXPECT_EQ(rows->size(), cols);
  EXPECT_EQ(rows->rank(), col);
  EXPECT_EQ(rows->name(), "row" + std::to_string(row));
  EXPECT_EQ(columns->size(), 2);
  EXPECT_EQ(columns->rank(), 1 - row);
  Tensor t = Tensor::empty({1}, DType::kI32);
  t.data<int32_t>()[0] = r;
  rows->all_reduce(t);
  int expect = 0;
  for (int k = 0; k < cols; ++k) expect += row * cols + k;
  EXPECT_EQ(t.data<int32_t>()[0], expect);
  t.data<int32_t>()[0] = r;
  columns->all_reduce(t);
  EXPECT_EQ(t.data<int32_t>()[0], col + (cols + col));
  // Column order follows the key: rank 0 of the column is the bottom row.
  Tensor g = Tensor::zeros({2}, DType::kI32);
  t.data<int32_t>()[0] = r;
  columns->all_gather(t, g);
  EXPECT_EQ(g.data<int32_t>()[0], cols + col);
  EXPECT_EQ(g.data<int32_t>()[1], col);
  // Groups interleave without mixing their traffic.
  auto wa = rows->barrier_async();
  auto wb = columns->barrier_async();
  wb->wait();
  wa->wait();
  // Opting out: a negative color gives no group, and the others still form theirs.
  auto odd = c.split(r % 2 == 1 ? 0 : -1, r, "odd");
  EXPECT_EQ(odd == nullptr, r % 2 == 0);
  if (odd) {
    EXPECT_EQ(odd->size(), n / 2);
    odd->barrier();
  }
  c.barrier();
}

inline void check_bad_arguments(Communicator& c) {
  Tensor q = Tensor::zeros({32}, DType::kQ8_0);
  try {
    c.all_reduce(q);
    FAIL() << "reducing q8_0 must be rejected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("cannot reduce q8_0"), std::string::npos) << e.what();
  }
  Tensor in = Tensor::zeros({3}, DType::kF32), small = Tensor::zeros({2}, DType::kF32);
  EXPECT_THROW(c.all_gather(in, small), Error);
  EXPECT_THROW(c.send(in, c.size(), 0), Error);
  EXPECT_THROW(c.send(in, 0, -1), Error);
  Tensor device = Tensor::view(in.raw(), {3}, DType::kF32, Device::kCuda);
  try {
    c.all_reduce(device);
    FAIL() << "a device tensor must be rejected by a host backend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("host tensors"), std::string::npos) << e.what();
  }
  c.barrier();  // argument errors start nothing, so the group is still in step
}

}  // namespace strata::comm::testing
