// runtime/prefix_cache.cpp: reference counts, the hash index and LRU eviction (see prefix_cache.h).
#include "runtime/prefix_cache.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {
namespace {
uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

BlockPool::BlockPool(BlockAllocator& allocator, int64_t block_size, bool caching)
    : allocator_(allocator), block_size_(block_size), caching_(caching), slots_(static_cast<size_t>(allocator.total())) {}

int32_t BlockPool::allocate() {
  int32_t b = allocator_.allocate();
  if (b < 0) {
    if (lru_.empty()) return -1;
    b = lru_.front();  // evict: the block stays allocated, only its cache entry goes
    uncache(b);
  }
  Slot& s = slots_[static_cast<size_t>(b)];
  STRATA_CHECK_KIND(ErrorKind::kInternal, s.refs == 0, "KV block ", b, " handed out while referenced");
  s.refs = 1;
  return b;
}

void BlockPool::release(int32_t block) {
  Slot& s = slots_[static_cast<size_t>(block)];
  STRATA_CHECK_KIND(ErrorKind::kInternal, s.refs > 0, "releasing KV block ", block, " that nobody references");
  if (--s.refs > 0) return;
  if (s.cached) {
    s.lru = lru_.insert(lru_.end(), block);
  } else {
    allocator_.free(block);
  }
}

uint64_t BlockPool::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  uint64_t h = mix(parent ^ 0x5bd1e9955bd1e995ull);
  for (int32_t t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return h;
}

int32_t BlockPool::lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (!caching_) return -1;
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const int32_t b = it->second;
  Slot& s = slots_[static_cast<size_t>(b)];
  if (s.parent != parent || !std::equal(tokens.begin(), tokens.end(), s.tokens.begin(), s.tokens.end())) return -1;
  if (s.refs++ == 0) lru_.erase(s.lru);
  return b;
}

void BlockPool::publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (!caching_ || by_hash_.count(hash) != 0) return;
  STRATA_CHECK_KIND(ErrorKind::kInternal, static_cast<int64_t>(tokens.size()) == block_size_,
                    "only full blocks are cached");
  Slot& s = slots_[static_cast<size_t>(block)];
  STRATA_CHECK_KIND(ErrorKind::kInternal, s.refs > 0 && !s.cached, "publishing KV block ", block,
                    " that is free or already cached");
  s.cached = true;
  s.hash = hash;
  s.parent = parent;
  s.tokens.assign(tokens.begin(), tokens.end());
  by_hash_.emplace(hash, block);
}

void BlockPool::uncache(int32_t block) {
  Slot& s = slots_[static_cast<size_t>(block)];
  by_hash_.erase(s.hash);
  lru_.erase(s.lru);
  s.cached = false;
  s.tokens.clear();
}

void BlockPool::clear_cache() {
  while (!lru_.empty()) {
    const int32_t b = lru_.front();
    uncache(b);
    allocator_.free(b);
  }
}

}  // namespace strata
