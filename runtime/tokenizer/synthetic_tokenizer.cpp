// runtime/tokenizer/synthetic_tokenizer.cpp: a deterministic SentencePiece-style vocabulary of any size
// for random-weight models (make-model): BPE learned on a built-in English paragraph, then made-up
// pieces to fill the rest. Not a tokenizer anyone trained on data; only its shape is realistic.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_set>

#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {

namespace {
constexpr const char* kSpaceMark = "\xE2\x96\x81";

// Written for this file; plain ASCII so every character is one symbol.
constexpr const char* kParagraph =
    "The old harbor town wakes before the sun. Fishing boats leave the quay one by one, their engines "
    "coughing in the cold air, while gulls circle above the nets and argue over scraps. On the hill "
    "behind the market, a baker opens her shutters and the smell of fresh bread drifts down the narrow "
    "streets. Children walk to school in pairs, counting the steps of the long stone stair that climbs "
    "from the water to the church. Their teacher, a patient man with a gray beard, has taught three "
    "generations of the same families to read, to write and to add numbers in their heads. He tells "
    "them that the sea gives and the sea takes, and that a careful sailor always checks the weather "
    "twice. In the afternoon the wind turns, and the boats come back heavy with silver fish. The whole "
    "town gathers at the pier to help: some carry baskets, some mend torn nets, and the youngest ones "
    "run between the crates shouting the prices they heard their parents call. When the light fades, "
    "lamps are lit in every window. Families sit together for supper, share the news of the day and "
    "plan the work of tomorrow. Old sailors remember storms that broke masts and tore sails, and the "
    "night a lighthouse keeper rowed out alone to guide a lost ship between the rocks. Nobody knows "
    "whether the story is true, but everyone tells it the same way, and the children listen with wide "
    "eyes. Later, when the streets are quiet, only the sound of the waves remains, patient and steady, "
    "washing against the stones as it has done for a thousand years. The town sleeps, and the sea keeps "
    "watch, and before long the first boat starts its engine again. Such is the rhythm of a place that "
    "lives by the water: simple, hard, and full of small kindness. Visitors who stay a week often find "
    "it difficult to leave, because the days feel longer and the people seem to have time for each "
    "other. They promise to return next summer, and many of them do, bringing friends who have heard "
    "about the bread, the boats, the stories and the quiet evenings by the harbor.";

struct Training {
  std::vector<std::string> merged;  // new pieces in the order learned
};

// Classic BPE training over the paragraph's words ("▁word"): repeatedly merge the most frequent
// adjacent pair (ties: smallest merged string, then smallest left piece) until `budget` pieces exist.
Training train(size_t budget, const std::set<std::string>& alphabet) {
  std::map<std::string, int64_t> word_counts;
  std::string word;
  for (const char* p = kParagraph;; ++p) {
    if (*p == ' ' || *p == '\0') {
      if (!word.empty()) ++word_counts[kSpaceMark + word];
      word.clear();
      if (*p == '\0') break;
    } else {
      word += *p;
    }
  }
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  for (const auto& [w, count] : word_counts) {
    std::vector<std::string> symbols{kSpaceMark};
    for (size_t i = 3; i < w.size(); ++i) symbols.emplace_back(1, w[i]);
    bool known = std::all_of(symbols.begin(), symbols.end(), [&](const std::string& s) { return alphabet.count(s); });
    if (known) words.emplace_back(std::move(symbols), count);
  }
  Training out;
  std::unordered_set<std::string> seen(alphabet.begin(), alphabet.end());
  while (out.merged.size() < budget) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const auto& [symbols, count] : words)
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second ||
          (it->second == best->second && it->first.first + it->first.second < best->first.first + best->first.second))
        best = it;
    }
    const auto [left, right] = best->first;
    const std::string joined = left + right;
    if (seen.insert(joined).second) out.merged.push_back(joined);
    for (auto& [symbols, count] : words) {
      std::vector<std::string> next;
      next.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          next.push_back(joined);
          ++i;
        } else {
          next.push_back(symbols[i]);
        }
      }
      symbols = std::move(next);
    }
  }
  return out;
}
}  // namespace

TokenizerData make_synthetic_tokenizer(int64_t vocab_size) {
  STRATA_CHECK(vocab_size >= 259 && vocab_size <= (int64_t{1} << 22), "synthetic tokenizer vocab_size ", vocab_size,
               " must be in [259, 4194304]: <unk>, <s>, </s> and 256 byte tokens come first");
  TokenizerData data;
  data.kind = TokenizerKind::kSentencePiece;
  auto add = [&](std::string piece, TokenType type) {
    data.tokens.push_back(std::move(piece));
    data.types.push_back(static_cast<int32_t>(type));
  };
  add("<unk>", TokenType::kUnknown);
  add("<s>", TokenType::kControl);
  add("</s>", TokenType::kControl);
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", b);
    add(piece, TokenType::kByte);
  }
  // The single characters (▁ and printable ASCII) go last with the lowest scores, as in sentencepiece;
  // a tiny vocabulary keeps only as many of them as fit.
  std::vector<std::string> chars{kSpaceMark};
  for (char c = '!'; c <= '~'; ++c) chars.emplace_back(1, c);
  const auto room = static_cast<size_t>(vocab_size) - data.tokens.size();
  chars.resize(std::min(chars.size(), room));
  const std::set<std::string> alphabet(chars.begin(), chars.end());
  const size_t budget = room - chars.size();

  std::vector<std::string> pieces = train(budget, alphabet).merged;
  // Fill up with pieces made of two learned pieces, most frequent (earliest) pairs first.
  std::unordered_set<std::string> taken(pieces.begin(), pieces.end());
  taken.insert(alphabet.begin(), alphabet.end());
  const std::vector<std::string> base = pieces.empty() ? chars : pieces;
  for (size_t diagonal = 0; pieces.size() < budget && diagonal < 2 * base.size(); ++diagonal) {
    for (size_t i = 0; i <= diagonal && pieces.size() < budget; ++i) {
      const size_t j = diagonal - i;
      if (i >= base.size() || j >= base.size()) continue;
      if (base[j].rfind(kSpaceMark, 0) == 0) continue;  // U+2581 only at the start of a piece
      std::string joined = base[i] + base[j];
      if (taken.insert(joined).second) pieces.push_back(std::move(joined));
    }
  }
  // Still short (tiny alphabets only): numbered pieces, unique by construction.
  for (size_t k = 0; pieces.size() < budget; ++k) {
    std::string joined = std::string(kSpaceMark) + "x" + std::to_string(k);
    if (taken.insert(joined).second) pieces.push_back(std::move(joined));
  }
  for (auto& p : pieces) add(std::move(p), TokenType::kNormal);
  for (auto& c : chars) add(c, TokenType::kNormal);
  // Strictly decreasing scores, so score order and id order agree (and so do HF's merge ranks).
  data.scores.assign(data.tokens.size(), 0.0f);
  for (size_t id = 259; id < data.tokens.size(); ++id) data.scores[id] = -static_cast<float>(id - 259);
  data.unk_id = 0;
  data.bos_id = 1;
  data.eos_id = 2;
  data.add_bos = true;
  data.add_space_prefix = true;
  data.space_prefix_rule = SpacePrefixRule::kIfMissing;
  return data;
}

}  // namespace strata
