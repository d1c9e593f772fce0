// runtime/formats/llama2c.h: llama2.c legacy (version 0) fp32 checkpoints: a 7 x int32 header, then
// tensors stacked over layers in run.c's order. Per-layer tensors are exposed as views into the
// stacked arrays. The int8 "ak42" exports are recognised and refused.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/formats/checkpoint.h"

namespace strata {

struct Llama2cHeader {
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
};

// Reads the header and computes where every tensor lies; the `file_size` must match exactly.
// Throws kFormat naming `source` on version-2 files, impossible dimensions and size mismatches.
// Entries get file = `source`. Exposed separately from open for tests and the fuzzer.
std::vector<TensorEntry> parse_llama2c_layout(const uint8_t* data, size_t size, const std::string& source,
                                              ModelConfig* config);

// Opens a .bin checkpoint; the tokenizer comes from tokenizer.bin, else tok<vocab>.bin, else the
// only tok*.bin in the same directory.
std::unique_ptr<Checkpoint> open_llama2c_checkpoint(const std::string& path);

}  // namespace strata
