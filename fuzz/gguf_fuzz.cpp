// fuzz/gguf_fuzz.cpp: libFuzzer target for the GGUF reader: parse_gguf_buffer on arbitrary bytes,
// then, for inputs that parse, the whole open path (metadata -> ModelConfig, tokenizer, shape checks)
// through an in-memory file. Any strata::Error is a clean rejection; crashes and sanitizer reports are bugs.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/formats/gguf.h"
#include "runtime/log.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  strata::log::set_level(strata::log::Level::kError);  // warnings about odd inputs are expected here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    strata::parse_gguf_buffer(data, size, "fuzz.gguf");
  } catch (const strata::Error&) {
    return 0;
  }
  // memfd: a real file for MappedFile without touching the disk.
  const int fd = ::memfd_create("gguf_fuzz", 0);
  if (fd < 0) return 0;
  if (::write(fd, data, size) == static_cast<ssize_t>(size)) {
    try {
      auto ckpt = strata::open_gguf_checkpoint("/proc/self/fd/" + std::to_string(fd));
      for (const auto& e : ckpt->entries()) {
        const strata::Tensor t = ckpt->tensor(e.name);
        volatile uint8_t sink = t.nbytes() > 0 ? static_cast<const uint8_t*>(t.raw())[t.nbytes() - 1] : 0;
        (void)sink;  // touch the last byte: bounds are what is being tested
      }
    } catch (const strata::Error&) {
    }
  }
  ::close(fd);
  return 0;
}
