// runtime/backend.h: the op interface every compute device implements (runtime/cpu/, runtime/cuda/).
// Model code calls only these; it never includes a vendor header. Activations are tensors the
// backend allocated (f32 on CPU); weights may be f32, f16, bf16, q8_0 or q4_0 and are converted on
// the fly with f32 accumulation.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/sampling_params.h"
#include "runtime/tensor.h"

namespace strata {

// Metadata of one step's tokens for paged attention. All tensors are i32 on the backend's device.
// Token t belongs to sequence token_seq[t] and sits at position positions[t]; it attends to
// positions 0..positions[t] of its sequence, read through that sequence's block table.
struct AttentionBatch {
  Tensor positions;     // [T]
  Tensor slots;         // [T] KV slot written by token t: block * block_size + offset
  Tensor token_seq;     // [T]
  Tensor block_tables;  // [S, max_blocks]
  int64_t n_tokens = 0;
  int64_t n_seqs = 0;
  int64_t max_blocks = 0;
  int64_t block_size = 0;
  int64_t max_position = 0;  // largest positions[t] + 1 of the step (bounds the work)
  // Every sequence has exactly one token in the step (token_seq holds each of 0..S-1 once): no token reads
  // a key another token of the step writes, which Backend::rope_kv_attention needs. Set on the host by
  // whoever fills token_seq; false says nothing.
  bool one_token_per_seq = false;
};

struct RopeParams {
  float theta = 10000.f;
  RopeScaling scaling;
  RopeStyle style = RopeStyle::kHalf;
  int64_t rot_dim = 0;  // leading dims of each head that rotate (= head_dim for Llama)
};

// One row of Backend::sample: what Sampler::sample takes, less the history (no repetition penalty).
struct SampleRow {
  SamplingParams params;  // repetition_penalty must be 1
  uint64_t step = 0;      // generated-token index: the stateless draw's counter
};

// A recorded sequence of backend ops, replayed with the same device pointers (a CUDA graph).
class OpGraph {
 public:
  virtual ~OpGraph() = default;
  virtual void replay() = 0;
  // Device time of the replays finished since the last call, in seconds (0 where not measured). Call it
  // once the work is known to be done (after a synchronising copy): it does not wait. Against the wall
  // time of a step it shows what the host costs between steps.
  virtual double take_device_seconds() { return 0; }
};

// One routed expert of Backend::expert_ffn: its weights and the rows of the step's gathered activations
// routed to it.
struct ExpertRows {
  Tensor gate, up, down;  // [F, D], [F, D], [D, F]
  int64_t begin = 0, rows = 0;
};

// One mixture-of-experts layer for Backend::moe_routed: its held experts, every one resident on the backend.
struct MoeLayer {
  const MoeConfig* config = nullptr;
  const std::vector<Tensor>* gate = nullptr;  // [F, D] each; entry i is global expert first + i
  const std::vector<Tensor>* up = nullptr;    // [F, D]
  const std::vector<Tensor>* down = nullptr;  // [D, F]
  int64_t first = 0;                          // expert parallelism: the slice this rank holds
  // Qwen2-MoE: the shared expert's output [T, D], added scaled by sigmoid(shared_logit[t]) (f32 [T]).
  Tensor shared_out, shared_logit;
  // Per-expert load, when set: i64 [n_experts + 1] on the backend (made zeroed on first use). Each routed
  // slot of a token t with count_mask[t] >= 0 (every token when count_mask is undefined) adds 1 to
  // (*counts)[expert]; each held expert such tokens chose adds its weight bytes to (*counts)[n_experts].
  Tensor* counts = nullptr;
  Tensor count_mask;  // i32 [T] on the backend
};

// Elementwise activations of encoder MLPs (vision towers, projectors). kGeluErf is the exact GELU
// (x/2 (1 + erf(x/sqrt 2)), transformers' "gelu"), kGeluTanh its tanh approximation ("gelu_new",
// "gelu_pytorch_tanh"), kQuickGelu x sigmoid(1.702 x) (CLIP's "quick_gelu").
enum class Activation : uint8_t { kGeluErf, kGeluTanh, kQuickGelu };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // The ordinal of the device this backend computes on (cuda:N -> N); -1 on the host.
  virtual int device_index() const { return -1; }
  // Dtype of activations and the KV cache on this backend.
  virtual DType activation_dtype() const = 0;
  virtual Tensor alloc(const Shape& shape, DType dtype) = 0;
  // Copies between two tensors of the same element count; either may live on the host or the device.
  // Float dtypes (f32, f16, bf16) convert on the way; other dtypes must match. A copy into host
  // memory has completed when copy() returns.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  // Brings a host weight (any dtype, e.g. a mapped checkpoint view) onto the device; on the CPU
  // backend this returns the view itself (zero-copy from the memory map).
  virtual Tensor upload_weight(const Tensor& host) = 0;
  // upload_weight for a weight the model hands only to matmul (and the matmul-based expert_ffn): the backend
  // may keep it in a layout of its own and let go of `host` (a view of memory that is handed back once no one
  // holds it, such as a transcoded layer), so the returned tensor's bytes need not be host's.
  virtual Tensor upload_matmul_weight(const Tensor& host) { return upload_weight(host); }
  virtual void synchronize() = 0;

  // out[t, :] = table[ids[t] - vocab_offset, :] when the id falls inside this shard, else 0.
  virtual void embed(const Tensor& table, const Tensor& ids, int64_t vocab_offset, Tensor& out) = 0;
  // out = x / rms(x) * weight, row by row.
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // residual += x; out = rmsnorm(residual) (fused residual add + norm).
  virtual void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // out[M, N] = x[M, K] * w[N, K]^T (+ bias[N]).
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) = 0;
  // Rotates x[T, H, head_dim] in place at positions[T].
  virtual void rope(Tensor& x, const Tensor& positions, const RopeParams& params) = 0;
  // out = silu(gate) * up, elementwise over [M, F].
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // out[t, i] = silu(gate_up[t, i]) * gate_up[t, F + i] for gate_up [T, 2F], out [T, F]: the SwiGLU of a
  // fused gate/up projection, whose rows hold the token's gate then its up.
  virtual void swiglu(const Tensor& gate_up, Tensor& out) = 0;
  // matmul(x, w_gate_up) then swiglu into out [M, F], for w_gate_up [2F, K] holding the gate rows then the up
  // rows, where a backend runs both in one pass: returns true when it did, false (and touches nothing) when
  // the caller must make the two calls. The default returns false.
  virtual bool matmul_swiglu(const Tensor& x, const Tensor& w_gate_up, Tensor& out);

  // a += b.
  virtual void add(Tensor& a, const Tensor& b) = 0;
  // A mixture-of-experts layer's combine: out[t, :] = (accumulate ? out[t, :] : 0) + sum over j < k of
  // weight[t*k + j] * src[index[t*k + j], :], for the T rows of out [T, D] and k = index.numel() / T, the
  // sum in j order; index (i32) and weight (f32) on the backend, a negative index adds nothing. Summing per
  // output row needs no atomics and gives the same bits every run. The default runs on host memory (the
  // CPU backend) and throws for device tensors.
  virtual void combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                            Tensor& out);
  // The routed experts of a mixture-of-experts step (runtime/models/moe.h): for each listed expert e and each
  // of its rows r in [e.begin, e.begin + e.rows) of x [N, D], y[r] = (silu(x[r] gate^T) * (x[r] up^T)) down^T,
  // for gate, up [F, D] and down [D, F]; rows no expert lists are left alone. A backend may run every
  // expert's projection as one grouped launch; the default makes each expert's matmul calls (and one
  // silu_mul where the experts' rows are consecutive), so quantized experts take matmul's paths.
  virtual void expert_ffn(const Tensor& x, const std::vector<ExpertRows>& experts, Tensor& y);
  // The routed half of a mixture-of-experts layer with no host round trip, where a backend has it: from the
  // router logits [T, n_experts] (f32, this backend's memory) route every token as route_tokens does
  // (runtime/models/moe.h), run the held experts the tokens chose, and write out [T, D] = each token's
  // weighted sum of its held experts' outputs (plus layer.shared_out's gated rows), what moe_ffn's host path
  // writes. Returns true when it did; false (touching nothing) when the caller must route on the host. Work it
  // enqueues may be recorded (capture). The default returns false.
  virtual bool moe_routed(const Tensor& x, const Tensor& logits, const MoeLayer& layer, Tensor& out);
  // Splits the columns of x [T, C] (any shape with T leading rows) into parts, in order: parts[i] gets
  // [T, C_i] with C_i = parts[i]->numel() / T, and the C_i sum to C; same dtype throughout, at most 4 parts.
  // A multi-token step's fused QKV projection yields its q, k and v this way.
  virtual void split_columns(const Tensor& x, const std::vector<Tensor*>& parts) = 0;
  // Writes k, v [T, Hkv, head_dim] into the paged caches [blocks, block_size, Hkv, head_dim] at slots;
  // a negative slot marks a padding token that is not written.
  virtual void kv_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache, Tensor& v_cache) = 0;
  // rope(q) and rope(k) in place, then kv_write(k, v, slots, k_cache, v_cache): a step's position encoding
  // and cache write, which backends may run as one launch. The default makes the three calls.
  virtual void rope_kv_write(Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& params,
                             const Tensor& slots, Tensor& k_cache, Tensor& v_cache);
  // rope_kv_write(q, k, v, batch.positions, params, batch.slots, ...) then attention(q, ...) for a step of
  // one token per sequence (batch.one_token_per_seq), where a backend runs both in one launch: returns true
  // when it did, false (and touches nothing) when the caller must make the two calls. q and k may be left
  // unrotated. The default returns false.
  virtual bool rope_kv_attention(Tensor& q, Tensor& k, const Tensor& v, const AttentionBatch& batch,
                                 const RopeParams& params, Tensor& k_cache, Tensor& v_cache, float scale, Tensor& out);
  // out[T, H, hd] = causal softmax(q k^T * scale) v over each token's sequence; GQA maps query head
  // h to KV head h / (H / Hkv).
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                         float scale, Tensor& out) = 0;

  // ---- Encoder ops (vision towers): defaults throw "not implemented on this backend" ----
  // out = (x - mean) / sqrt(var + eps) * weight (+ bias), row by row over the last dimension (LayerNorm).
  virtual void layernorm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor& out);
  // out = act(x) elementwise; out may be x.
  virtual void activation(const Tensor& x, Activation act, Tensor& out);
  // Bidirectional (non-causal) attention within fixed-length sequences: q, k, v [T, H, head_dim] hold
  // T / seq_len sequences of seq_len consecutive tokens each; every token attends to every token of its
  // own sequence. out[T, H, head_dim] = softmax(q k^T * scale) v per sequence and head.
  virtual void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len,
                                       float scale, Tensor& out);

  // For each of the R rows of logits [R, V] (f32, this backend's memory): tokens[r] = the token
  // Sampler::sample draws under rows[r], logprobs[r] = its log-softmax under the raw logits. rows, tokens
  // and logprobs are host arrays of R. The default runs Sampler on host logits; accelerators sample where
  // the logits are, so only R tokens cross the bus.
  virtual void sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs);

  // Whether capture() records graphs here (CUDA, unless turned off); the CPU backend does not.
  virtual bool supports_capture() const { return false; }
  // Records the ops `record` enqueues, without running them, into a graph that replay() runs again on
  // the same buffers. `record` must not synchronise, copy to the host, or allocate outside alloc(): run
  // the same ops once uncaptured first so scratch buffers and handles exist. Tensors that `record`
  // allocates and drops become the graph's own memory.
  virtual std::unique_ptr<OpGraph> capture(const std::function<void()>& record);
};

// Checks Backend::split_columns' operands (shapes, dtypes, part count) and returns each part's column count.
std::vector<int64_t> split_column_widths(const Tensor& x, const std::vector<Tensor*>& parts);

// The CPU backend (always built). `threads` <= 0 means OpenMP's default. `repack_weights`: upload_weight
// also keeps q4_0/q4_1/q5_0/q5_1/q8_0 matrices in an 8-row interleaved copy for faster matmuls
// (runtime/cpu/quant_repack.h; costs a second copy of those weights in memory).
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, bool repack_weights = true);

}  // namespace strata
