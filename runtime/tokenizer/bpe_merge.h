// runtime/tokenizer/bpe_merge.h: the merge loop both BPE flavours share (SentencePiece scores, ranked
// byte-level merges): a linked list of symbols and a priority queue of adjacent pairs, O(n log n).
#pragma once
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace strata::bpe {

// Piece -> id, looked up by string_view without building a std::string per query.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceIndex = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// One symbol of a word: bytes [start, start + length) of the word buffer. Merged-away symbols keep
// length 0; prev/next link the live ones (-1 at the ends).
struct Symbol {
  int32_t id;
  uint32_t start;
  uint32_t length;
  int32_t prev;
  int32_t next;
};

// What merging two adjacent symbols gives: `ok` false when they do not merge.
struct PairMerge {
  bool ok = false;
  double priority = 0;  // higher merges first; equal priorities merge leftmost first
  int32_t merged_id = -1;
};

// A merges list ("left right", best first; Hugging Face tokenizer.json) as the merge loop reads it:
// (left id, right id) -> (rank, merged id). Both BPE flavours build it the same way.
class MergeRanks {
 public:
  MergeRanks() = default;
  // `id_of(piece)` is the vocabulary's lookup (-1 when absent). A merge whose halves or join are not
  // tokens is skipped, the first rank of a pair wins, and a piece holding spaces (odd vocabularies)
  // splits at the first space whose halves both exist.
  template <typename IdOf>
  MergeRanks(const std::vector<std::string>& merges, IdOf&& id_of) {
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string_view merge = merges[rank];
      for (size_t space = merge.find(' '); space != std::string_view::npos; space = merge.find(' ', space + 1)) {
        const int32_t left = id_of(merge.substr(0, space)), right = id_of(merge.substr(space + 1));
        if (left < 0 || right < 0) continue;
        const int32_t merged = id_of(std::string(merge.substr(0, space)) + std::string(merge.substr(space + 1)));
        if (merged >= 0) ranks_.emplace(key(left, right), std::make_pair(static_cast<int32_t>(rank), merged));
        break;
      }
    }
  }
  bool empty() const { return ranks_.empty(); }
  // The merge of two adjacent symbols by rank: lower ranks first.
  PairMerge pair(int32_t left, int32_t right) const {
    if (left < 0 || right < 0) return {};
    const auto it = ranks_.find(key(left, right));
    if (it == ranks_.end()) return {};
    return PairMerge{true, -static_cast<double>(it->second.first), it->second.second};
  }

 private:
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> ranks_;
};

// Links `symbols` (already in order) and merges adjacent pairs, best priority first, until no pair
// merges. `pair(left, right)` returns the PairMerge of two live adjacent symbols.
template <typename PairFn>
void merge(std::vector<Symbol>& symbols, PairFn&& pair) {
  struct Candidate {
    double priority;
    int32_t left;
    int32_t right;
    uint32_t left_length;
    uint32_t right_length;
    int32_t merged_id;
    bool operator<(const Candidate& o) const {  // std::priority_queue pops the largest
      if (priority != o.priority) return priority < o.priority;
      return left > o.left;
    }
  };
  const int32_t n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  std::priority_queue<Candidate> queue;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const PairMerge m = pair(symbols[left], symbols[right]);
    if (m.ok)
      queue.push({m.priority, left, right, symbols[left].length, symbols[right].length, m.merged_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    // Stale entries: one side has merged with something else since this pair was queued.
    if (left.length != c.left_length || right.length != c.right_length || left.next != c.right) continue;
    left.id = c.merged_id;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
}

}  // namespace strata::bpe
