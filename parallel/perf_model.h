// parallel/perf_model.h: an analytic model of one decode or prefill step of a plan: counted bytes and
// FLOPs divided by measured ceilings (DESIGN.md, "Performance method"), plus TP all-reduces, pipeline
// bubbles, stage-to-stage sends and weight streaming. Pure functions, no I/O: the launcher reads the
// hardware file and passes its text to parse_hardware. Not a simulator: one number per term, so a
// report can say which term bounds a plan and how far the measurement is from it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "parallel/partition.h"
#include "parallel/plan.h"
#include "runtime/dtype.h"
#include "runtime/model_config.h"

namespace strata::parallel {

struct Link {
  double gbs = 0;         // per-rank bandwidth in one direction, GB/s (1e9 bytes/s)
  double latency_us = 0;  // one message, end to end
};

// One kind of machine and how many of them a cluster has (bench/hardware/*.yaml, keys in docs/).
struct Hardware {
  std::string name;
  std::string source;         // the file, for messages
  double mem_gbs = 0;         // device memory read rate (H100: HBM; CPU ranks: DRAM), GB/s
  double gemm_tflops = 0;     // dense matmul rate in the weights' dtype, TFLOP/s
  int64_t memory_bytes = 0;   // per device
  int devices_per_node = 1;
  int nodes = 1;              // nodes in the cluster (the largest world is nodes x devices_per_node)
  Link intra;                 // between devices of one node (NVLink / NVSwitch; CPU ranks: shared memory)
  Link inter;                 // between nodes, per device (one InfiniBand rail per GPU)
  double h2d_gbs = 0;         // pinned host -> device copies
  double disk_gbs = 0;        // sequential checkpoint reads
  // Shares of the ceilings strata's kernels reach, fitted to measurements in bench/results; 1 = the
  // pure roofline. Kept apart from the ceilings so a report can show both.
  double mem_efficiency = 1;
  double gemm_efficiency = 1;
  double prefill_gemm_efficiency = 0;  // prefill's large GEMMs (tensor cores); 0 = gemm_efficiency
  double step_overhead_us = 0;  // fixed cost of a step (launches, scheduling, sampling)
  int activation_bytes = 2;     // bytes of an activation on the wire: bf16 on GPUs, f32 on the CPU backend
  int64_t max_step_tokens = 2048;  // prefill chunk per step (GeneratorOptions::max_step_tokens)
  int world() const { return devices_per_node * nodes; }
};

// Parses a hardware file's YAML; throws strata::Error(kConfig) naming `source`, line and key.
Hardware parse_hardware(const std::string& yaml_text, const std::string& source);

// The sizes of a plan that the model needs.
struct PlanShape {
  int tp = 1, pp = 1, dp = 1;
  int ep = 1;  // parallel.expert: a stage's routed experts spread over its tp x ep ranks
  int micro_batches = 1;
  // Interleaved schedule: the running sequences split into pp groups, one per stage each tick; no
  // bubble, and micro_batches is not used.
  bool interleaved = false;
  int overlap_chunks = 1;
  int overlap_min_tokens = kDefaultOverlapMinTokens;  // comm.overlap_min_tokens
  DType dtype = DType::kBF16;
  std::optional<DType> kv_cache_dtype;  // serve.kv_cache_dtype; unset: activation_bytes an element
  std::vector<int64_t> stage_layers;  // layers of each stage; empty = balanced over pp
  int64_t host_stream_bytes = 0;      // streamed from pinned host memory per pass, the worst rank
  int64_t disk_stream_bytes = 0;      // streamed from disk per pass, the worst rank
  int world() const { return tp * pp * dp * ep; }
  std::string str() const;            // "tp4 pp2 dp1" (" ep2" when ep > 1)
};
PlanShape plan_shape(const Plan& plan, const Partition& partition);

struct Workload {
  int64_t batch = 1;        // sequences across all replicas (split as `generate --batch` does)
  int64_t prompt_len = 16;
  int64_t output_len = 64;
};

// One step on the critical path, seconds.
struct StepTime {
  double compute_s = 0;           // weight + KV reads or FLOPs (roofline), every pipeline slot
  double allreduce_s = 0;         // TP all-reduces and the LM head's all-gather, all of it
  double allreduce_exposed_s = 0; // the part compute does not hide (comm.overlap_chunks)
  double p2p_s = 0;               // activations between stages
  double bubble_s = 0;            // idle pipeline slots: (pp - 1) slots of the slowest stage
  double stream_s = 0;            // weight streaming beyond what compute hides
  double overhead_s = 0;
  double total_s = 0;             // the sum of the terms above but allreduce_s (its exposed part counts)
  std::string bound;              // "memory", "compute", "communication", "host link", "disk"
  // Share of the all-reduce time hidden behind compute; 1 when there is none.
  double hidden_fraction() const { return allreduce_s > 0 ? 1 - allreduce_exposed_s / allreduce_s : 1; }
};

struct Prediction {
  StepTime decode;                  // one decode step of a replica
  StepTime prefill;                 // one prefill step (max_step_tokens tokens) of a replica
  double decode_tokens_per_s = 0;   // every replica together
  double prefill_tokens_per_s = 0;
  double ttft_s = 0;                // prefill of the replica's whole batch
  int64_t weight_bytes_per_rank = 0;  // the largest rank's weights (all tiers)
  int64_t device_bytes_per_rank = 0;  // its weights on the device + KV cache
  int64_t kv_bytes_per_rank = 0;
  bool fits = true;                 // device_bytes_per_rank <= memory_bytes (when known)
  int nodes = 1;
};

Prediction predict(const ModelConfig& config, const PlanShape& shape, const Hardware& hw, const Workload& work);

// Closed forms, public so tests and docs can check them.
// Ring all-reduce: 2 (p - 1) / p x bytes / bw + 2 (p - 1) x latency; a double binary tree
// (2 log2 p x latency + 2 bytes / bw) when cheaper, as NCCL picks for small messages.
double allreduce_seconds(int64_t bytes, int ranks, const Link& link);
double allgather_seconds(int64_t bytes, int ranks, const Link& link);  // bytes = the gathered total
double p2p_seconds(int64_t bytes, const Link& link);
// Idle share of a pipeline step of `micro_batches` over `pp` stages: (pp - 1) / (m + pp - 1).
double bubble_fraction(int pp, int micro_batches);
// Weight elements one TP rank holds of one layer (norms replicated, KV heads replicated past n_kv).
int64_t layer_params(const ModelConfig& config, int tp);
// One rank's matrix elements over `layers` layers of a stage, and what a step of `tokens` tokens does with
// them. Dense layers are layer_params' matrices. Mixture-of-experts layers (MoeConfig::sparse_layer; a stage
// holds the model's share of them) hold attention over tp, the router, n_experts / (tp x ep) routed experts
// and 1 / (tp x ep) of the shared expert; a step reads only the held experts some token was routed to (each
// token taken to pick n_used of n_experts uniformly: 1 - (1 - n_used / n_experts)^tokens of them) and runs
// each token through n_used / (tp x ep) of them on average.
struct StageMatmuls {
  double held = 0;             // elements held (memory)
  double read = 0;             // elements the step reads
  double per_token = 0;        // elements each token multiplies: FLOPs = 2 x tokens x per_token
  double after_attention = 0;  // of per_token: output projection and MLP / experts (what a row group's all-reduce overlaps)
  int64_t sparse_layers = 0;   // of `layers`: mixture-of-experts layers
};
StageMatmuls stage_matmuls(const ModelConfig& config, const PlanShape& shape, int64_t layers, int64_t tokens);
// Elements of the vocab-parallel LM head and embedding on one TP rank (the vocab padded to tp).
int64_t head_params(const ModelConfig& config, int tp);
// The TP group of a replica crosses nodes (the rank order keeps tp consecutive).
bool tp_crosses_nodes(int tp, const Hardware& hw);

// A scaling sweep (bench/scaling/*.yaml): plans x batches x prompt/output lengths, run by
// `strata bench scaling`. Parsed here, beside the plan and hardware files, so YAML stays in parallel/.
struct SweepPlan {
  std::string name;
  std::string file;   // an existing plan file (its model.path is replaced by the sweep's model), or
  int tp = 1, pp = 1, dp = 1, micro_batches = 0, overlap_chunks = 2;  // sizes of a generated plan
  int overlap_min_tokens = kDefaultOverlapMinTokens;                  // comm.overlap_min_tokens
  bool interleaved = false;                                           // schedule: interleaved
  int world() const { return tp * pp * dp; }
};
struct SweepSpec {
  std::string name;
  std::string source;
  std::string model_path;    // an existing checkpoint, or
  std::string model_preset;  // made with `strata make-model --preset` into the output folder
  std::string model_dtype = "f32";
  std::string hardware;      // hardware file for the predictions (relative to the working directory)
  std::string launcher = "mpirun";  // mpirun | srun | none (world of one rank only)
  std::string device = "cpu";
  std::vector<SweepPlan> plans;
  std::vector<int64_t> batches = {1};
  std::vector<int64_t> prompt_lens = {16};
  std::vector<int64_t> output_lens = {16};
  int64_t weak_batch_per_rank = 0;  // > 0 adds weak-scaling points: batch = ranks x this
  int timeout_s = 600;              // per point
};
SweepSpec parse_sweep(const std::string& yaml_text, const std::string& source);

enum class Objective { kThroughput, kLatency };
struct Suggestion {
  PlanShape shape;
  Prediction prediction;
  std::string reason;  // the bound and what the plan spends time on
};
struct SuggestResult {
  std::vector<Suggestion> ranked;     // best first
  std::vector<std::string> rejected;  // "tp3 pp1 dp1: <first validate_plan error>" and memory misfits
};
// Every (tp, pp, dp) with tp x pp x dp = `gpus` that validate_plan accepts for `config` and that fits
// the devices' memory, ranked by predicted tokens/s (kThroughput) or decode step time (kLatency).
SuggestResult suggest_plans(const ModelConfig& config, const Hardware& hw, int gpus, const Workload& work,
                            Objective objective, DType dtype = DType::kBF16);

}  // namespace strata::parallel
