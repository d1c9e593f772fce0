// launcher/rank_runtime.h: one rank's part of a plan: the world and its sub-groups (TP group of the
// stage, the replica), this rank's coordinates and placement, and the StageLink and Collective the
// model step uses. Built once per process by the commands that take --plan.
#pragma once
#include <memory>
#include <string>

#include <functional>

#include "comm/communicator.h"
#include "launcher/args.h"
#include "launcher/model_session.h"
#include "parallel/partition.h"
#include "parallel/plan.h"

namespace strata::launcher {

class RankRuntime {
 public:
  // Validates the parsed `plan` against the model (`model_override` replaces model.path when set),
  // joins the world and splits the groups. Every rank of the job calls it.
  RankRuntime(parallel::Plan plan, const std::string& model_override);
  ~RankRuntime();

  const parallel::Plan& plan() const { return plan_; }
  const parallel::RankPartition& part() const { return part_; }
  const std::string& model_path() const { return model_path_; }
  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int replica_index() const { return part_.dp; }
  int replicas() const { return plan_.parallel.data; }
  // Deadline of every comm wait: the plan's comm.timeout_s, or STRATA_COMM_TIMEOUT when set.
  double comm_timeout_s() const { return comm_timeout_s_; }
  // Timing runs only (bench decode --skip-all-reduces, bench scaling's no-communication run): the TP
  // group's all-reduces are skipped, so outputs are wrong and only step times mean something. Call
  // before placement().
  void skip_all_reduces();
  // The plan's pipeline schedule for this rank's engine: micro-batches, interleaving, its stage.
  void configure(GeneratorOptions& generator) const;
  // True on the one rank that prints user output (world rank 0).
  bool prints() const { return world_->rank() == 0; }
  RankPlacement placement();
  // The placement for a rank computing on `backend`: with a CUDA backend the TP group moves device
  // tensors over NCCL (comm.backend auto|nccl, when built in) or stages them through the host
  // transport (mpi), and the replica link stages activations. Call once, before placement().
  RankPlacement placement(Backend& backend, int cuda_device = 0);
  // The device string for this rank's backend: "cuda" becomes "cuda:<local rank mod GPUs>".
  std::string device_for(const std::string& device) const;
  // CPU threads for this rank's backend: the host's free cores shared by the ranks on it (OpenMP
  // threads of oversubscribed ranks would stall each other's barriers); 0 when OMP_NUM_THREADS decides.
  int cpu_threads() const;
  comm::Communicator& world() { return *world_; }
  // Ends the job after an error on this rank: with more than one rank, the others are stopped too
  // (so none waits for a peer that will never come); returns the exit code for a lone rank.
  int fail(const std::exception& error);

 private:
  parallel::Plan plan_;
  std::string model_path_;
  parallel::RankPartition part_;
  std::unique_ptr<comm::Communicator> world_, tp_, replica_;
  std::unique_ptr<Collective> tp_collective_;
  std::unique_ptr<comm::Communicator> experts_;     // the stage's expert group, with parallel.expert > 1
  std::unique_ptr<Collective> experts_collective_;
  std::unique_ptr<StageLink> link_;
  int local_size_ = 1;
  int local_rank_ = 0;
  double comm_timeout_s_ = 0;
  bool nccl_graphs_ = false;       // STRATA_CUDA_GRAPHS_TP=1: NCCL collectives may be captured in graphs
  bool skip_all_reduces_ = false;  // skip_all_reduces()
};

// Runs a model command on this process with the session options of its flags (session_options): with
// --plan, inside this rank's RankRuntime (the plan parsed once; model path, offload, overlap and
// micro-batches from it; a failure ends the whole job instead of leaving peers waiting); without,
// alone (`rank` is null).
using RankBody = std::function<int(const SessionOptions& options, RankRuntime* rank)>;
int run_with_plan(const Args& args, const RankBody& body);

// This rank's ModelSession: for a plan (`rank` set), the backend on this rank's device and the
// placement of its shard; otherwise the whole model on options.device. Rank 0 shows progress on
// stderr while a large model loads.
std::unique_ptr<ModelSession> open_session(SessionOptions options, RankRuntime* rank);

}  // namespace strata::launcher
