// fuzz/safetensors_fuzz.cpp: libFuzzer target for the safetensors header parser and, when the first
// byte is 'C', the config.json reader (both take untrusted JSON). Any strata::Error is a clean
// rejection; crashes and sanitizer reports are bugs.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (size > 0 && data[0] == 'C') {
      strata::parse_hf_config(std::string(reinterpret_cast<const char*>(data) + 1, size - 1), "fuzz/config.json");
      return 0;
    }
    const strata::SafetensorsHeader h = strata::parse_safetensors_header(data, size, "fuzz.safetensors");
    for (const auto& t : h.tensors) {
      if (t.nbytes == 0) continue;
      volatile uint8_t sink = data[t.offset + t.nbytes - 1];  // every tensor must lie inside the input
      (void)sink;
    }
  } catch (const strata::Error&) {
  }
  return 0;
}
