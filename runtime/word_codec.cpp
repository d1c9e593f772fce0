// runtime/word_codec.cpp: WordWriter / WordReader and the request encoding (word_codec.h).
#include "runtime/word_codec.h"

#include <bit>
#include <cstring>

#include "runtime/error.h"

namespace strata {

void WordWriter::u64(uint64_t v) {
  out_.push_back(static_cast<int32_t>(static_cast<uint32_t>(v)));
  out_.push_back(static_cast<int32_t>(static_cast<uint32_t>(v >> 32)));
}
void WordWriter::f32(float v) { out_.push_back(std::bit_cast<int32_t>(v)); }
void WordWriter::f64(double v) { u64(std::bit_cast<uint64_t>(v)); }
void WordWriter::str(const std::string& s) {
  i32(static_cast<int32_t>(s.size()));
  const size_t at = out_.size();
  out_.resize(at + (s.size() + 3) / 4, 0);
  if (!s.empty()) std::memcpy(out_.data() + at, s.data(), s.size());
}
void WordWriter::ids(const std::vector<int32_t>& v) {
  i32(static_cast<int32_t>(v.size()));
  out_.insert(out_.end(), v.begin(), v.end());
}

const int32_t* WordReader::take(size_t n) {
  STRATA_CHECK_KIND(ErrorKind::kComm, n <= w_.size() && pos_ <= w_.size() - n, what_, " truncated: needs ", pos_ + n,
                    " words, has ", w_.size(), " (", hint_, ")");
  const int32_t* p = w_.data() + pos_;
  pos_ += n;
  return p;
}
uint64_t WordReader::u64() {
  const int32_t* p = take(2);
  return static_cast<uint64_t>(static_cast<uint32_t>(p[0])) | (static_cast<uint64_t>(static_cast<uint32_t>(p[1])) << 32);
}
float WordReader::f32() { return std::bit_cast<float>(i32()); }
double WordReader::f64() { return std::bit_cast<double>(u64()); }
size_t WordReader::count() {
  const int32_t n = i32();
  STRATA_CHECK_KIND(ErrorKind::kComm, n >= 0, what_, " has a negative length ", n, " (", hint_, ")");
  return static_cast<size_t>(n);
}
std::string WordReader::str() {
  const size_t n = count();
  const int32_t* p = take((n + 3) / 4);
  return std::string(reinterpret_cast<const char*>(p), n);
}
std::vector<int32_t> WordReader::ids() {
  const size_t n = count();
  const int32_t* p = take(n);
  return std::vector<int32_t>(p, p + n);
}

void write_request(WordWriter& w, const EngineRequest& r) {
  w.u64(r.id);
  w.i64(r.max_new_tokens);
  w.i32(r.logprobs);
  w.f32(r.sampling.temperature);
  w.i32(r.sampling.top_k);
  w.f32(r.sampling.top_p);
  w.f32(r.sampling.min_p);
  w.f32(r.sampling.repetition_penalty);
  w.u64(r.sampling.seed);
  w.ids(r.prompt);
  w.ids(r.stop_ids);
  w.i32(static_cast<int32_t>(r.images.size()));
  for (const RequestImage& image : r.images) {
    STRATA_CHECK_KIND(ErrorKind::kInternal,
                      image.pixels.dtype() == DType::kF32 && (image.pixels.rank() == 3 || image.pixels.rank() == 4),
                      "request ", r.id, ": image pixels ", shape_str(image.pixels.shape()),
                      " are not f32 [c, h, w] or [tiles, c, h, w]");
    w.u64(image.hash);
    w.i32(image.position);
    w.i32(image.length);
    w.i32(image.height);
    w.i32(image.width);
    w.i32(image.pixels.rank());
    for (int64_t d : image.pixels.shape()) w.i64(d);
    for (int64_t i = 0; i < image.pixels.numel(); ++i) w.f32(image.pixels.data<float>()[i]);
  }
}

EngineRequest read_request(WordReader& in) {
  EngineRequest r;
  r.id = in.u64();
  r.max_new_tokens = in.i64();
  r.logprobs = in.i32();
  r.sampling.temperature = in.f32();
  r.sampling.top_k = in.i32();
  r.sampling.top_p = in.f32();
  r.sampling.min_p = in.f32();
  r.sampling.repetition_penalty = in.f32();
  r.sampling.seed = in.u64();
  r.prompt = in.ids();
  r.stop_ids = in.ids();
  r.images.resize(in.count());
  for (RequestImage& image : r.images) {
    image.hash = in.u64();
    image.position = in.i32();
    image.length = in.i32();
    image.height = in.i32();
    image.width = in.i32();
    const int32_t rank = in.i32();
    STRATA_CHECK_KIND(ErrorKind::kComm, rank == 3 || rank == 4, "request ", r.id, ": image pixels of rank ", rank,
                      " in a step message (ranks of the replica are out of step)");
    Shape shape(static_cast<size_t>(rank));
    for (int64_t& d : shape) {
      d = in.i64();
      STRATA_CHECK_KIND(ErrorKind::kComm, d > 0 && d <= (int64_t{1} << 16), "request ", r.id,
                        ": image dimension ", d, " in a step message (ranks of the replica are out of step)");
    }
    const int32_t* words = in.take(static_cast<size_t>(shape_numel(shape)));  // checks the length first
    image.pixels = Tensor::empty(shape, DType::kF32);
    std::memcpy(image.pixels.raw(), words, static_cast<size_t>(image.pixels.nbytes()));
  }
  return r;
}

}  // namespace strata
