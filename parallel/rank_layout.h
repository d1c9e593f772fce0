// parallel/rank_layout.h: where each rank sits in the data x pipeline x expert x tensor grid, and the
// member lists of the groups the comm layer builds. Tensor is fastest, then expert:
// rank = ((dp * PP + pp) * EP + ep) * TP + tp, so a TP group is consecutive ranks (one node's GPUs under a
// by-slot mpirun mapping) and so is a stage's expert group (its EP x TP ranks).
#pragma once
#include <vector>

namespace strata::parallel {

struct RankCoord {
  int dp = 0;
  int pp = 0;
  int tp = 0;
  int ep = 0;
};

class RankLayout {
 public:
  RankLayout() = default;
  RankLayout(int tensor, int pipeline, int data, int expert = 1);  // each >= 1 (checked)

  int tensor() const { return tensor_; }
  int pipeline() const { return pipeline_; }
  int data() const { return data_; }
  int expert() const { return expert_; }
  int world_size() const { return tensor_ * expert_ * pipeline_ * data_; }

  RankCoord coord(int rank) const;  // rank in [0, world_size) (checked)
  int rank_of(RankCoord coord) const;

  // Groups, members in ascending rank order (so also ascending tp / pp / dp).
  std::vector<int> tp_group(int rank) const;  // same (dp, pp, ep): all-reduce of row-parallel outputs
  std::vector<int> expert_group(int rank) const;  // same (dp, pp): sum of the experts' partial outputs
  std::vector<int> pp_chain(int rank) const;  // same (dp, ep, tp), stage 0 first: activations flow along it
  std::vector<int> replica(int rank) const;   // same dp: one model copy, driven by its driver
  std::vector<int> dp_group(int rank) const;  // same (pp, tp) across replicas: holders of the same shard
  int driver(int rank) const;                 // (dp, pp 0, tp 0): runs the scheduler of the replica
  int prev_stage_rank(int rank) const;        // same (dp, tp) on stage pp-1; -1 on the first stage
  int next_stage_rank(int rank) const;        // same (dp, tp) on stage pp+1; -1 on the last stage

 private:
  int tensor_ = 1;
  int pipeline_ = 1;
  int data_ = 1;
  int expert_ = 1;
};

}  // namespace strata::parallel
