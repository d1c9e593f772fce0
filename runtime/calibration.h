// runtime/calibration.h: activation statistics for calibrated quantization (`strata quantize --type
// w8a8-int8|fp8|w4a16 --calibration FILE`). The unquantized model scores the calibration tokens through the
// ordinary engine path (Generator::score on the CPU backend); a Backend decorator sees every matmul and, when
// its weight is the first linear layer reading an input (q of q/k/v, o, gate of gate/up, down), folds the
// input rows into per-channel statistics. Memory stays bounded: two numbers per channel, plus a capped
// reservoir sample of rows per input for AWQ's search.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace strata {

class Checkpoint;

// The four inputs of a dense Llama layer's linear layers, and which weights read each.
enum class LinearInput { kAttnIn, kAttnOut, kFfnIn, kFfnOut };
// "blk.3.attn_in", ... (the key of CalibrationStats::inputs).
std::string calibration_key(int64_t layer, LinearInput input);

// The first position of every window is an attention sink in many models: its activations can be orders of
// magnitude above any other token's. It counts in max_abs (a static scale must cover it) but not in the mean
// or the sample, which would otherwise weigh AWQ's search towards that one token.
struct ChannelStats {
  int64_t channels = 0;
  int64_t rows = 0;             // tokens seen
  int64_t mean_rows = 0;        // tokens in sum_abs and the sample pool: all but each window's first
  std::vector<float> max_abs;   // [channels] max |x_j| over every row
  std::vector<double> sum_abs;  // [channels] sum |x_j| over the rows after each window's first (mean = / mean_rows)
  std::vector<float> sample;    // [sample_rows, channels] a uniform sample of those rows (reservoir)
  int64_t sample_rows = 0;
  float max_abs_all() const;  // max over channels
};

struct CalibrationStats {
  std::map<std::string, ChannelStats> inputs;  // by calibration_key
  int64_t tokens = 0;
  const ChannelStats& at(int64_t layer, LinearInput input) const;
};

struct CalibrationOptions {
  int64_t context = 512;    // tokens per scored window (capped by the model's max_seq)
  int64_t sample_rows = 0;  // rows kept per input for AWQ (0: none)
  uint64_t seed = 0;        // the reservoir sample's
  int threads = 0;          // CPU threads (0: all cores)
};

// Runs the checkpoint's dense Llama-family model over `ids` (windows of options.context tokens, each scored
// from its start) and returns the statistics of every layer's four linear inputs. Throws kInvalidArgument
// for fewer than two tokens.
CalibrationStats collect_activation_stats(const Checkpoint& checkpoint, const std::vector<int32_t>& ids,
                                          const CalibrationOptions& options);

}  // namespace strata
