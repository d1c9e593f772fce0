// parallel/rank_layout.cpp: rank <-> (dp, pp, tp) arithmetic and group member lists.
#include "parallel/rank_layout.h"

#include "runtime/error.h"

namespace strata::parallel {

RankLayout::RankLayout(int tensor, int pipeline, int data, int expert)
    : tensor_(tensor), pipeline_(pipeline), data_(data), expert_(expert) {
  STRATA_CHECK(tensor >= 1 && pipeline >= 1 && data >= 1 && expert >= 1, "parallel sizes must be >= 1, got tensor ",
               tensor, ", pipeline ", pipeline, ", data ", data, ", expert ", expert);
}

RankCoord RankLayout::coord(int rank) const {
  STRATA_CHECK(rank >= 0 && rank < world_size(), "rank ", rank, " is outside the world of ", world_size());
  RankCoord c;
  c.tp = rank % tensor_;
  c.ep = (rank / tensor_) % expert_;
  c.pp = (rank / (tensor_ * expert_)) % pipeline_;
  c.dp = rank / (tensor_ * expert_ * pipeline_);
  return c;
}

int RankLayout::rank_of(RankCoord c) const {
  STRATA_CHECK(c.dp >= 0 && c.dp < data_ && c.pp >= 0 && c.pp < pipeline_ && c.tp >= 0 && c.tp < tensor_ &&
                   c.ep >= 0 && c.ep < expert_,
               "coordinates (dp ", c.dp, ", pp ", c.pp, ", ep ", c.ep, ", tp ", c.tp, ") are outside data ", data_,
               " x pipeline ", pipeline_, " x expert ", expert_, " x tensor ", tensor_);
  return ((c.dp * pipeline_ + c.pp) * expert_ + c.ep) * tensor_ + c.tp;
}

std::vector<int> RankLayout::tp_group(int rank) const {
  RankCoord c = coord(rank);
  std::vector<int> out;
  for (c.tp = 0; c.tp < tensor_; ++c.tp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> RankLayout::expert_group(int rank) const {
  RankCoord c = coord(rank);
  std::vector<int> out;
  for (c.ep = 0; c.ep < expert_; ++c.ep)
    for (c.tp = 0; c.tp < tensor_; ++c.tp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> RankLayout::pp_chain(int rank) const {
  RankCoord c = coord(rank);
  std::vector<int> out;
  for (c.pp = 0; c.pp < pipeline_; ++c.pp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> RankLayout::replica(int rank) const {
  const int first = coord(rank).dp * pipeline_ * expert_ * tensor_;
  std::vector<int> out;
  for (int r = first; r < first + pipeline_ * expert_ * tensor_; ++r) out.push_back(r);
  return out;
}

std::vector<int> RankLayout::dp_group(int rank) const {
  RankCoord c = coord(rank);
  std::vector<int> out;
  for (c.dp = 0; c.dp < data_; ++c.dp) out.push_back(rank_of(c));
  return out;
}

int RankLayout::driver(int rank) const { return rank_of(RankCoord{coord(rank).dp, 0, 0, 0}); }

int RankLayout::prev_stage_rank(int rank) const {
  RankCoord c = coord(rank);
  if (c.pp == 0) return -1;
  --c.pp;
  return rank_of(c);
}

int RankLayout::next_stage_rank(int rank) const {
  RankCoord c = coord(rank);
  if (c.pp + 1 == pipeline_) return -1;
  ++c.pp;
  return rank_of(c);
}

}  // namespace strata::parallel
