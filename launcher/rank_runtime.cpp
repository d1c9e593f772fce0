// launcher/rank_runtime.cpp: plan -> world -> validated partition -> groups -> placement.
#include "launcher/rank_runtime.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "comm/bootstrap.h"
#include "comm/communicator_collective.h"
#include "comm/host_staged_communicator.h"
#ifdef STRATA_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif
#if defined(STRATA_HAVE_CUDA) && defined(STRATA_HAVE_NCCL)
#include "comm/nccl/nccl_communicator.h"
#endif
#include "launcher/cpu_threads.h"
#include "launcher/progress.h"
#include "launcher/session_flags.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/replica_link.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {

RankRuntime::RankRuntime(parallel::Plan plan, const std::string& model_override) : plan_(std::move(plan)) {
  const std::string& plan_path = plan_.source;
  model_path_ = model_override.empty() ? plan_.model.path : model_override;
  STRATA_CHECK_KIND(ErrorKind::kConfig, !model_path_.empty(), plan_path,
                    ": the plan has no model.path; add one or pass --model PATH");
  comm::CommConfig config;
  config.timeout_s = plan_.comm.timeout_s;
  if (const char* env = std::getenv("STRATA_COMM_TIMEOUT")) config.timeout_s = std::atof(env);
  comm_timeout_s_ = config.timeout_s;
  if (const char* env = std::getenv("STRATA_CUDA_GRAPHS_TP")) nccl_graphs_ = std::string(env) == "1";
  const comm::RankInfo launch = comm::detect_launch();
  world_ = comm::make_world_communicator(config, launch);
  local_rank_ = std::max(0, launch.local_rank);
  local_size_ = std::max(1, launch.local_size);
  const int rank = world_->rank(), world = world_->size();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);

  STRATA_CHECK_KIND(ErrorKind::kConfig, world == plan_.world_size(), plan_path, ": the plan needs ",
                    plan_.world_size(), " ranks (data ", plan_.parallel.data, " x pipeline ", plan_.parallel.pipeline,
                    " x expert ", plan_.parallel.expert, " x tensor ", plan_.parallel.tensor, ") but this job has ",
                    world, "; launch it with mpirun -np ", plan_.world_size(), " (or srun -n ", plan_.world_size(),
                    ")");
  const auto checkpoint = open_checkpoint(model_path_);
  const ModelConfig model = checkpoint->config();
  parallel::PartitionOptions options;
  options.world_size = world;
  options.default_dtype = parallel::checkpoint_weight_dtype(*checkpoint, options.default_dtype);
  const parallel::Partition partition = parallel::make_partition(plan_, model, options);
  part_ = partition.rank(rank);
  log::set_rank_prefix(cat("[r", rank, "/", world, " dp", part_.dp, " pp", part_.pp, " tp", part_.tp, " ", host, "]"),
                       rank == 0);

  // A stage is ep x tp ranks (RankLayout); with expert parallelism each stage also gets its expert group.
  const int ep_size = plan_.parallel.expert, tp_size = plan_.parallel.tensor * ep_size;
  const int pp_size = plan_.parallel.pipeline;
  tp_ = world_->split((part_.dp * pp_size + part_.pp) * ep_size + part_.ep, rank,
                      cat("tp[dp", part_.dp, " pp", part_.pp, ep_size > 1 ? cat(" ep", part_.ep) : "", "]"));
  replica_ = world_->split(part_.dp, rank, cat("replica[dp", part_.dp, "]"));
  if (ep_size > 1) {
    experts_ = world_->split(part_.dp * pp_size + part_.pp, rank, cat("experts[dp", part_.dp, " pp", part_.pp, "]"));
    experts_collective_ = std::make_unique<comm::CommunicatorCollective>(*experts_);
  }
  tp_collective_ = std::make_unique<comm::CommunicatorCollective>(*tp_);
  // Positions inside the replica: (pp * EP + ep) * TP + tp (ranks keep their world order); the sampler is
  // the last stage's first rank.
  auto in_replica = [&](int world_rank) { return world_rank < 0 ? -1 : world_rank - part_.dp * pp_size * tp_size; };
  link_ = std::make_unique<parallel::ReplicaLink>(*replica_, (pp_size - 1) * tp_size, in_replica(part_.prev_stage),
                                                  in_replica(part_.next_stage));
  LOG_DEBUG("layers [", part_.layer_begin, ", ", part_.layer_end, "), q heads ", part_.shard.q_head_begin, "+",
            part_.shard.q_heads, ", kv heads ", part_.shard.kv_head_begin, "+", part_.shard.kv_heads, ", ffn ", part_.shard.ffn_begin, "+",
            part_.shard.ffn_count, ", vocab ", part_.shard.vocab_begin, "+", part_.shard.vocab_count);
}

RankRuntime::~RankRuntime() = default;

int RankRuntime::cpu_threads() const { return default_cpu_threads(local_size_); }

std::string RankRuntime::device_for(const std::string& device) const {
  if (device != "cuda") return device;
#ifdef STRATA_HAVE_CUDA
  const int gpus = cuda_device_count();
  STRATA_CHECK_KIND(ErrorKind::kConfig, gpus > 0, "--device cuda, but this host has no visible GPU");
  return cat("cuda:", local_rank_ % gpus);
#else
  return device;  // make_backend explains that CUDA is not built in
#endif
}

RankPlacement RankRuntime::placement(Backend& backend, int cuda_device) {
  if (backend.device() != Device::kCpu) {
    // Replica positions as in the constructor: a stage is expert x tensor ranks.
    const int tp_size = plan_.parallel.tensor * plan_.parallel.expert, pp_size = plan_.parallel.pipeline;
    const parallel::CommBackend wanted = plan_.comm.backend;
    bool nccl = false;
#if defined(STRATA_HAVE_CUDA) && defined(STRATA_HAVE_NCCL)
    if (wanted != parallel::CommBackend::kMpi) {
      comm::NcclOptions o;
      o.device = cuda_device;
      o.compute_stream = cuda_backend_stream(backend);
      o.timeout_s = plan_.comm.timeout_s;
      o.recordable = nccl_graphs_;
      tp_ = comm::make_nccl_communicator(*tp_, o, tp_->name());
      nccl = true;
    }
#else
    STRATA_CHECK_KIND(ErrorKind::kConfig, wanted != parallel::CommBackend::kNccl, plan_.source,
                      ": comm.backend is nccl but this binary has no NCCL; rebuild with CUDA and NCCL or use mpi");
#endif
    if (!nccl) tp_ = comm::make_host_staged_communicator(std::move(tp_), backend);
    replica_ = comm::make_host_staged_communicator(std::move(replica_), backend);
    tp_collective_ = std::make_unique<comm::CommunicatorCollective>(*tp_, skip_all_reduces_);
    auto in_replica = [&](int world_rank) { return world_rank < 0 ? -1 : world_rank - part_.dp * pp_size * tp_size; };
    link_ = std::make_unique<parallel::ReplicaLink>(*replica_, (pp_size - 1) * tp_size, in_replica(part_.prev_stage),
                                                    in_replica(part_.next_stage));
    LOG_DEBUG("device tensors: TP group over ", nccl ? "NCCL" : "host-staged MPI", ", pipeline over host-staged MPI");
  }
  return placement();
}

void RankRuntime::skip_all_reduces() {
  skip_all_reduces_ = true;
  tp_collective_ = std::make_unique<comm::CommunicatorCollective>(*tp_, true);
}

void RankRuntime::configure(GeneratorOptions& generator) const {
  generator.micro_batches = plan_.micro_batches();
  generator.interleaved = plan_.parallel.interleaved;
  generator.pipeline_stage = part_.pp;
  generator.pipeline_stages = plan_.parallel.pipeline;
}

RankPlacement RankRuntime::placement() {
  RankPlacement p;
  p.shard = part_.shard;
  p.tp = tp_collective_.get();
  p.experts = experts_collective_.get();
  p.link = link_.get();
  return p;
}

int RankRuntime::fail(const std::exception& error) {
  const auto* e = dynamic_cast<const Error*>(&error);
  if (e != nullptr) LOG_DEBUG("the error below was raised at ", e->location());
  LOG_ERROR(e != nullptr ? error_kind_name(e->kind()) : "error", ": ", error.what());
  if (world_ && world_->size() > 1) {
    std::fflush(stdout);
    comm::abort_world(1);
  }
  return 1;
}

int run_with_plan(const Args& args, const RankBody& body) {
  STRATA_CHECK(args.has("plan") || !args.has("skip-all-reduces"),
               "--skip-all-reduces skips a plan's tensor-parallel all-reduces; it needs --plan");
  if (!args.has("plan")) return body(session_options(args), nullptr);
  // The plan is parsed here, once per process; the flags are read before the world is joined so a
  // bad flag fails every rank alike without a half-built job.
  parallel::Plan plan = parallel::load_plan(args.str("plan"));
  SessionOptions options = session_options(args, &plan, comm::detect_launch().world_rank);
  RankRuntime rank(std::move(plan), args.str("model"));
  options.model_path = rank.model_path();
  rank.configure(options.generator);
  options.batch_wait_ms = rank.plan().offload.batch_wait_ms;
  if (args.has("skip-all-reduces")) rank.skip_all_reduces();
  try {
    return body(options, &rank);
  } catch (const std::exception& e) {
    return rank.fail(e);
  }
}

std::unique_ptr<ModelSession> open_session(SessionOptions options, RankRuntime* rank) {
  // A large checkpoint takes a while to map and place: rank 0 says how far it is.
  const bool prints = rank == nullptr || rank->prints();
  const Progress progress(cat("loading ", options.model_path), resident_memory,
                          prints && wants_progress(path_bytes(options.model_path)));
  if (rank == nullptr) return std::make_unique<ModelSession>(options);
  options.device = rank->device_for(options.device);
  if (options.threads == 0 && options.device == "cpu") options.threads = rank->cpu_threads();
  options.overlap_chunks = rank->plan().comm.overlap_chunks;
  options.overlap_min_tokens = rank->plan().comm.overlap_min_tokens;
  std::unique_ptr<Backend> backend = make_backend(options.device, options.threads, options.backend);
  const RankPlacement placement = rank->placement(*backend, std::max(0, backend->device_index()));
  return std::make_unique<ModelSession>(options, placement, std::move(backend));
}

}  // namespace strata::launcher
