// parallel/plan.h: the YAML plan as a plain struct (what plan_parser.cpp returns), and the diagnostics
// that parsing and validation report. No yaml-cpp here: only plan_parser.cpp sees YAML.
// The schema, with every key, type and default, is documented in configs/README.md.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "offload/residency.h"
#include "runtime/dtype.h"

namespace strata::parallel {

struct SourceLoc {  // 1-based; line 0 means "not written in the file"
  int line = 0;
  int column = 0;
};

enum class Severity : uint8_t { kError, kWarning };

// One finding about a plan: where (file:line:col), which field, and what to change.
struct Diagnostic {
  Severity severity = Severity::kError;
  std::string file;
  SourceLoc loc;
  std::string field;    // dotted path, e.g. "parallel.tensor" or "offload.rules[1].tier"
  std::string message;  // says what is wrong and the fix
  // "configs/x.yaml:3:11: error: <message>"
  std::string str() const;
};

bool has_errors(const std::vector<Diagnostic>& diagnostics);
// Every diagnostic, one per line.
std::string join_diagnostics(const std::vector<Diagnostic>& diagnostics);
// Throws strata::Error(kConfig) joining every diagnostic when any of them is an error.
void throw_if_errors(const std::vector<Diagnostic>& diagnostics);

// A memory size written as bytes ("6GiB", "512MB", 1073741824) or as a share of a capacity ("40%").
struct Budget {
  int64_t bytes = -1;     // >= 0 when written as a size
  double percent = -1.0;  // in (0, 100] when written as a share
  bool is_set() const { return bytes >= 0 || percent > 0; }
  // Bytes this budget allows out of `capacity`; -1 = no limit (unset, or a share of an unknown capacity).
  int64_t resolve(int64_t capacity) const;
  std::string str() const;  // "6 GiB", "40%", "unlimited"
};

// Tiers are offload's (the plan only names where weights live).
using offload::Tier;
using offload::tier_name;

enum class CommBackend : uint8_t { kAuto, kMpi, kNccl };
const char* comm_backend_name(CommBackend backend);

struct ModelSection {
  std::string path;            // HF directory, GGUF file or llama2.c checkpoint
  std::string mmproj;          // llama.cpp's vision projector GGUF for a LLaVA text-model GGUF (optional)
  std::optional<DType> dtype;  // weights as the ranks hold them; unset = the checkpoint's own
  std::string shape;           // a runtime/model_presets.h name, to check plans without the weights
};

struct StageSpec {
  std::vector<int64_t> layers;  // as written, in order (validation requires one contiguous range)
  SourceLoc loc;
};

struct ParallelSection {
  int tensor = 1;
  int pipeline = 1;
  int data = 1;
  // Expert parallelism: copies of each stage's TP group that run the same batch and share the stage's
  // experts, spread over all tensor x expert ranks (runtime/shard_spec.h).
  int expert = 1;
  int micro_batches = 0;          // 0 = as many as pipeline stages
  bool interleaved = false;       // schedule: interleaved (runtime/engine.h EngineOptions::interleaved)
  std::vector<StageSpec> stages;  // empty = balanced split
};

struct TierRule {  // tensors whose canonical name matches the glob live on `tier`
  std::string match;
  Tier tier = Tier::kHost;
  SourceLoc loc;
};

struct RankBudget {  // overrides of the budgets for some ranks (e.g. a GPU shared with another job)
  std::vector<int> ranks;
  Budget device_budget;
  Budget host_budget;
  SourceLoc loc;
};

struct OffloadSection {
  Budget device_budget;  // unset = every weight on the device
  Budget host_budget;    // unset = no limit on pinned host memory
  Tier cold_tier = Tier::kHost;
  int prefetch_depth = 2;  // layers in flight ahead of compute (size of the staging ring)
  // On ranks whose weights stream, the driver may hold a decode step up to this long while requests
  // are arriving, so they join it (runtime/scheduler.h, SchedulerOptions::batch_wait_s). 0 = never.
  double batch_wait_ms = 2.0;
  std::vector<TierRule> rules;
  std::vector<RankBudget> per_rank;
  // offload.experts (mixture-of-experts models): routed experts kept on the device per layer, the rest
  // fetched from pinned host memory when routed to. -1 = derived from device_budget.
  int64_t experts_resident_per_layer = -1;
  offload::ExpertEviction expert_eviction = offload::ExpertEviction::kLru;
};

// Tokens each overlap chunk must keep for a step to be split: smaller steps are bound by reading the
// weights, which every chunk would read again (a decode step of 16 tokens in 2 chunks reads them twice).
inline constexpr int kDefaultOverlapMinTokens = 128;

struct CommSection {
  CommBackend backend = CommBackend::kAuto;
  int overlap_chunks = 2;
  int overlap_min_tokens = kDefaultOverlapMinTokens;
  double timeout_s = 60.0;
};

struct ServeSection {
  int port = 8080;
  int64_t max_batch_tokens = 4096;
  int max_seqs = 64;
  int64_t kv_blocks = 0;  // 0 = derive from kv_budget
  Budget kv_budget;       // unset = 4 full contexts; a share is of the memory free after the weights
  std::optional<DType> kv_cache_dtype;  // unset (auto) = the backend's activation dtype; f8_e4m3 = fp8 rows
  int block_size = 16;
  int max_queue = 256;
};

// Speculative decoding (runtime/speculative.h); the --speculative & co. flags override it.
struct SpeculativeSection {
  std::string method = "off";  // off | ngram | draft
  int tokens = 4;              // drafts per step and sequence
  int ngram_min = 1, ngram_max = 3;
  std::string draft_model;     // method draft: a smaller checkpoint with the target's vocabulary
};

struct Plan {
  std::string source = "<plan>";  // file the plan came from, used in every diagnostic
  ModelSection model;
  ParallelSection parallel;
  OffloadSection offload;
  CommSection comm;
  ServeSection serve;
  SpeculativeSection speculative;
  // Where each written field sits: "parallel.tensor" -> 4:11. Lets validation against the model point
  // at the line to change.
  std::map<std::string, SourceLoc> locations;

  int world_size() const { return parallel.tensor * parallel.expert * parallel.pipeline * parallel.data; }
  int micro_batches() const { return parallel.micro_batches > 0 ? parallel.micro_batches : parallel.pipeline; }
  // Location of `field`, else of its nearest written parent ("parallel.tensor" -> "parallel"), else 1:1.
  SourceLoc where(const std::string& field) const;
  // A diagnostic about `field`, located in this plan's file.
  Diagnostic diagnostic(const std::string& field, std::string message, Severity severity = Severity::kError) const;
};

}  // namespace strata::parallel
