// runtime/word_codec.h: the one encoding of messages as flat i32 words that ranks exchange (the
// Engine's step messages, runtime/engine_control.h; the data-parallel routing messages,
// parallel/dp_wire.h). Floats and doubles travel as their bits, 64-bit values as two words, strings
// as a byte count and the bytes packed four to a word, id lists as a count and the ids: every rank
// decodes exactly what was encoded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/request.h"

namespace strata {

class WordWriter {
 public:
  void i32(int32_t v) { out_.push_back(v); }
  void u64(uint64_t v);
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f32(float v);
  void f64(double v);
  void str(const std::string& s);
  void ids(const std::vector<int32_t>& v);
  std::vector<int32_t> take() { return std::move(out_); }

 private:
  std::vector<int32_t> out_;
};

// Reads words in order. A message shorter than what it announces, or a negative length, throws
// Error(kComm) naming `what` and `hint` (who disagrees on the protocol).
class WordReader {
 public:
  WordReader(const std::vector<int32_t>& words, std::string what, std::string hint)
      : w_(words), what_(std::move(what)), hint_(std::move(hint)) {}
  const int32_t* take(size_t n);
  int32_t i32() { return *take(1); }
  uint64_t u64();
  int64_t i64() { return static_cast<int64_t>(u64()); }
  float f32();
  double f64();
  size_t count();  // a non-negative length word
  std::string str();
  std::vector<int32_t> ids();
  size_t pos() const { return pos_; }
  bool done() const { return pos_ == w_.size(); }

 private:
  const std::vector<int32_t>& w_;
  std::string what_, hint_;
  size_t pos_ = 0;
};

// A request with its sampling parameters, prompt and stop ids.
void write_request(WordWriter& w, const EngineRequest& r);
EngineRequest read_request(WordReader& in);

}  // namespace strata
