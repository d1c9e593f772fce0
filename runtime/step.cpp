// runtime/step.cpp: flat encoding of StepBatch: a header of sizes, then each array.
#include "runtime/step.h"

#include "runtime/error.h"

namespace strata {

std::vector<int32_t> StepBatch::pack() const {
  std::vector<int32_t> out;
  out.reserve(7 + tokens.size() * 3 + block_tables.size() + logit_rows.size());
  out.push_back(static_cast<int32_t>(tokens.size()));
  out.push_back(static_cast<int32_t>(block_tables.size()));
  out.push_back(static_cast<int32_t>(logit_rows.size()));
  out.push_back(static_cast<int32_t>(n_seqs));
  out.push_back(static_cast<int32_t>(max_blocks));
  for (const auto* v : {&tokens, &positions, &token_seq, &block_tables, &logit_rows, &seq_ids}) out.insert(out.end(), v->begin(), v->end());
  return out;
}

StepBatch StepBatch::unpack(const std::vector<int32_t>& flat) {
  STRATA_CHECK_KIND(ErrorKind::kComm, flat.size() >= 5, "step message too short");
  StepBatch s;
  const size_t t = static_cast<size_t>(flat[0]), b = static_cast<size_t>(flat[1]), r = static_cast<size_t>(flat[2]);
  s.n_seqs = flat[3];
  s.max_blocks = flat[4];
  STRATA_CHECK_KIND(ErrorKind::kComm, flat.size() == 5 + 3 * t + b + r + static_cast<size_t>(s.n_seqs),
                    "step message has ", flat.size(), " values, header says ", 5 + 3 * t + b + r + s.n_seqs);
  auto it = flat.begin() + 5;
  auto take = [&](std::vector<int32_t>& v, size_t n) {
    v.assign(it, it + static_cast<std::ptrdiff_t>(n));
    it += static_cast<std::ptrdiff_t>(n);
  };
  take(s.tokens, t);
  take(s.positions, t);
  take(s.token_seq, t);
  take(s.block_tables, b);
  take(s.logit_rows, r);
  take(s.seq_ids, static_cast<size_t>(s.n_seqs));
  return s;
}

}  // namespace strata
