// tests/runtime/engine_parts_test.cpp: the Engine's pieces on their own: the ref-counted block pool
// with its prefix cache (sharing, exact-match hits, LRU eviction only of unreferenced blocks) and the
// control/sample message encodings (every field survives the trip, truncation is an error).
#include <gtest/gtest.h>

#include "runtime/engine_control.h"
#include "runtime/error.h"
#include "runtime/prefix_cache.h"

namespace strata {
namespace {

std::vector<int32_t> block_tokens(int32_t start) { return {start, start + 1, start + 2, start + 3}; }

TEST(BlockPool, SharesCachedBlocksAndEvictsLeastRecentlyUsed) {
  BlockAllocator allocator(3);
  BlockPool pool(allocator, 4, true);
  const auto a = block_tokens(10), b = block_tokens(20);
  const uint64_t ha = BlockPool::chain_hash(0, a), hb = BlockPool::chain_hash(ha, b);
  EXPECT_NE(ha, BlockPool::chain_hash(0, b));
  EXPECT_NE(hb, BlockPool::chain_hash(0, b));  // the same tokens after another prefix are another block

  const int32_t x = pool.allocate(), y = pool.allocate();
  pool.publish(x, ha, 0, a);
  pool.publish(y, hb, ha, b);
  EXPECT_EQ(pool.lookup(ha, 0, a), x);  // shared: two references
  EXPECT_EQ(pool.refs(x), 2);
  EXPECT_EQ(pool.lookup(hb, 0, b), -1);             // wrong parent
  EXPECT_EQ(pool.lookup(ha, 0, block_tokens(11)), -1);  // same hash key, other tokens: no false hit
  pool.release(x);
  pool.release(x);
  pool.release(y);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_EQ(pool.cached_idle(), 2);
  EXPECT_EQ(pool.available(), 3);

  // x went idle first, so it is evicted first; y stays findable until it is needed too.
  const int32_t z = pool.allocate();
  EXPECT_NE(z, x);
  EXPECT_NE(z, y);
  EXPECT_EQ(pool.allocate(), x);
  EXPECT_EQ(pool.lookup(ha, 0, a), -1);
  EXPECT_EQ(pool.lookup(hb, ha, b), y);
  EXPECT_EQ(pool.allocate(), -1);  // y is referenced again: nothing left to evict
  pool.release(y);
  pool.clear_cache();
  EXPECT_EQ(pool.cached_idle(), 0);
  EXPECT_EQ(allocator.free_count(), 1);
}

TEST(BlockPool, WithoutCachingBlocksReturnAtOnce) {
  BlockAllocator allocator(2);
  BlockPool pool(allocator, 4, false);
  const int32_t x = pool.allocate();
  pool.publish(x, 1, 0, block_tokens(0));
  pool.release(x);
  EXPECT_EQ(allocator.free_count(), 2);
  EXPECT_EQ(pool.lookup(1, 0, block_tokens(0)), -1);
}

TEST(EngineControl, MessagesRoundTrip) {
  ControlMessage m;
  m.shutdown = true;
  AdmittedRequest a;
  a.handle = 7;
  a.request.id = 0xfedcba9876543210ull;
  a.request.prompt = {1, 2, 3};
  a.request.max_new_tokens = 5000000000ll;
  a.request.sampling.temperature = 0.7f;
  a.request.sampling.top_k = 3;
  a.request.sampling.top_p = 0.25f;
  a.request.sampling.min_p = 0.125f;
  a.request.sampling.repetition_penalty = 1.5f;
  a.request.sampling.seed = 0x123456789abcull;
  a.request.stop_ids = {2, 9};
  a.request.logprobs = 4;
  RequestImage image;
  image.pixels = Tensor::empty({3, 2, 2}, DType::kF32);
  for (int64_t i = 0; i < 12; ++i) image.pixels.data<float>()[i] = -1.5f + 0.25f * static_cast<float>(i);
  image.hash = 0x0123456789abcdefull;
  image.position = 1;
  image.length = 2;
  a.request.images = {image};
  m.admitted = {a};
  m.cancelled = {3, 4};
  m.step.tokens = {5, 6};
  m.step.positions = {0, 1};
  m.step.token_seq = {0, 0};
  m.step.block_tables = {2};
  m.step.logit_rows = {1};
  m.step.seq_ids = {7};
  m.step.n_seqs = 1;
  m.step.max_blocks = 1;
  const ControlMessage r = ControlMessage::unpack(m.pack());
  EXPECT_TRUE(r.shutdown);
  ASSERT_EQ(r.admitted.size(), 1u);
  const EngineRequest& q = r.admitted[0].request;
  EXPECT_EQ(r.admitted[0].handle, 7);
  EXPECT_EQ(q.id, a.request.id);
  EXPECT_EQ(q.prompt, a.request.prompt);
  EXPECT_EQ(q.max_new_tokens, a.request.max_new_tokens);
  EXPECT_EQ(q.sampling.temperature, 0.7f);
  EXPECT_EQ(q.sampling.top_k, 3);
  EXPECT_EQ(q.sampling.top_p, 0.25f);
  EXPECT_EQ(q.sampling.min_p, 0.125f);
  EXPECT_EQ(q.sampling.repetition_penalty, 1.5f);
  EXPECT_EQ(q.sampling.seed, a.request.sampling.seed);
  EXPECT_EQ(q.stop_ids, a.request.stop_ids);
  EXPECT_EQ(q.logprobs, 4);
  ASSERT_EQ(q.images.size(), 1u);
  EXPECT_EQ(q.images[0].hash, image.hash);
  EXPECT_EQ(q.images[0].position, 1);
  EXPECT_EQ(q.images[0].length, 2);
  ASSERT_EQ(q.images[0].pixels.shape(), image.pixels.shape());
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(q.images[0].pixels.data<float>()[i], image.pixels.data<float>()[i]);
  EXPECT_EQ(r.cancelled, m.cancelled);
  EXPECT_EQ(r.step.tokens, m.step.tokens);
  EXPECT_EQ(r.step.block_tables, m.step.block_tables);
  EXPECT_EQ(r.step.seq_ids, m.step.seq_ids);

  std::vector<int32_t> words = m.pack();
  words.resize(10);
  EXPECT_THROW(ControlMessage::unpack(words), Error);
  EXPECT_THROW(ControlMessage::unpack({1, 2, 3, 4, 5, 6, 7, 8, 9}), Error);  // not a control message

  const std::vector<int> tops = {0, 2};
  std::vector<SampledToken> rows(2);
  rows[0] = {11, -0.5f, {}};
  rows[1] = {12, -1.25f, {{12, -1.25f}, {40, -2.f}}};
  const std::vector<int32_t> sw = pack_samples(rows, tops);
  EXPECT_EQ(sw.size(), sample_words(tops));
  const auto back = unpack_samples(sw, tops);
  EXPECT_EQ(back[0].token, 11);
  EXPECT_EQ(back[1].logprob, -1.25f);
  ASSERT_EQ(back[1].top.size(), 2u);
  EXPECT_EQ(back[1].top[1].token, 40);
  EXPECT_EQ(back[1].top[1].logprob, -2.f);
}

}  // namespace
}  // namespace strata
