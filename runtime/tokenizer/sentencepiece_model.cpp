// runtime/tokenizer/sentencepiece_model.cpp: a minimal, bounds-checked protobuf reader for
// sentencepiece's ModelProto (tokenizer.model): pieces, trainer_spec ids, normalizer_spec flags.
// Only BPE models are accepted; the field numbers are those of sentencepiece_model.proto.
#include <cstring>

#include "runtime/error.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {

namespace {
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

class ProtoReader {
 public:
  ProtoReader(std::string_view bytes, const std::string& name, const char* message, size_t base)
      : bytes_(bytes), name_(name), message_(message), base_(base) {}

  // Reads the next field key; false at the end of the message.
  bool next(uint32_t* field, uint32_t* wire) {
    if (pos_ >= bytes_.size()) return false;
    const uint64_t key = varint();
    *field = static_cast<uint32_t>(key >> 3);
    *wire = static_cast<uint32_t>(key & 7);
    if (*field == 0) fail("field number 0");
    return true;
  }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= bytes_.size()) fail("truncated varint");
      const auto byte = static_cast<unsigned char>(bytes_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    fail("varint longer than 10 bytes");
  }

  float fixed32_float() {
    need(4);
    uint32_t raw;
    std::memcpy(&raw, bytes_.data() + pos_, 4);  // protobuf is little-endian, as is every host we build for
    pos_ += 4;
    float value;
    std::memcpy(&value, &raw, 4);
    return value;
  }

  std::string_view length_delimited(size_t* offset) {
    const uint64_t length = varint();
    if (length > bytes_.size() - pos_)
      fail(cat("length ", length, " runs past the end (", bytes_.size() - pos_, " bytes left)"));
    *offset = base_ + pos_;
    const std::string_view out = bytes_.substr(pos_, length);
    pos_ += length;
    return out;
  }

  void skip(uint32_t wire) {
    size_t unused;
    switch (wire) {
      case kVarint: varint(); return;
      case kFixed64: need(8); pos_ += 8; return;
      case kLengthDelimited: length_delimited(&unused); return;
      case kFixed32: need(4); pos_ += 4; return;
      default: fail(cat("unsupported wire type ", wire));
    }
  }

  void expect(uint32_t wire, uint32_t want, uint32_t field) {
    if (wire != want) fail(cat("field ", field, " has wire type ", wire, ", expected ", want));
  }

  [[noreturn]] void fail(const std::string& what) const {
    STRATA_THROW(ErrorKind::kFormat, name_, ": malformed SentencePiece model (", message_, " at byte ", base_ + pos_,
                 "): ", what);
  }

 private:
  void need(size_t n) {
    if (bytes_.size() - pos_ < n) fail(cat("truncated: needs ", n, " bytes, ", bytes_.size() - pos_, " left"));
  }

  std::string_view bytes_;
  const std::string& name_;
  const char* message_;
  size_t base_;
  size_t pos_ = 0;
};

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

struct Specs {
  int32_t model_type = 1;  // UNIGRAM unless the file says otherwise
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
};

void read_piece(std::string_view bytes, size_t base, const std::string& name, TokenizerData& data) {
  ProtoReader r(bytes, name, "ModelProto.pieces", base);
  std::string piece;
  float score = 0;
  int32_t type = static_cast<int32_t>(TokenType::kNormal);
  uint32_t field, wire;
  size_t offset;
  while (r.next(&field, &wire)) {
    if (field == 1) {
      r.expect(wire, kLengthDelimited, field);
      piece = std::string(r.length_delimited(&offset));
    } else if (field == 2) {
      r.expect(wire, kFixed32, field);
      score = r.fixed32_float();
    } else if (field == 3) {
      r.expect(wire, kVarint, field);
      type = as_int32(r.varint());
      if (type < 1 || type > 6) r.fail(cat("piece ", data.tokens.size(), " has unknown type ", type));
    } else {
      r.skip(wire);
    }
  }
  data.tokens.push_back(std::move(piece));
  data.scores.push_back(score);
  data.types.push_back(type);
}

void read_trainer_spec(std::string_view bytes, size_t base, const std::string& name, Specs& specs) {
  ProtoReader r(bytes, name, "ModelProto.trainer_spec", base);
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    int32_t* target = nullptr;
    bool* flag = nullptr;
    switch (field) {
      case 3: target = &specs.model_type; break;
      case 24: flag = &specs.treat_whitespace_as_suffix; break;
      case 35: flag = &specs.byte_fallback; break;
      case 40: target = &specs.unk_id; break;
      case 41: target = &specs.bos_id; break;
      case 42: target = &specs.eos_id; break;
      case 43: target = &specs.pad_id; break;
      default: r.skip(wire); continue;
    }
    r.expect(wire, kVarint, field);
    const uint64_t v = r.varint();
    if (target) *target = as_int32(v);
    if (flag) *flag = v != 0;
  }
}

void read_normalizer_spec(std::string_view bytes, size_t base, const std::string& name, Specs& specs) {
  ProtoReader r(bytes, name, "ModelProto.normalizer_spec", base);
  uint32_t field, wire;
  while (r.next(&field, &wire)) {
    if (field == 3 || field == 4) {
      r.expect(wire, kVarint, field);
      (field == 3 ? specs.add_dummy_prefix : specs.remove_extra_whitespaces) = r.varint() != 0;
    } else {
      r.skip(wire);
    }
  }
}
}  // namespace

TokenizerData parse_sentencepiece_model(std::string_view bytes, const std::string& name) {
  TokenizerData data;
  data.kind = TokenizerKind::kSentencePiece;
  Specs specs;
  ProtoReader r(bytes, name, "ModelProto", 0);
  uint32_t field, wire;
  size_t offset;
  while (r.next(&field, &wire)) {
    if (field >= 1 && field <= 3) {
      r.expect(wire, kLengthDelimited, field);
      const std::string_view sub = r.length_delimited(&offset);
      if (field == 1) read_piece(sub, offset, name, data);
      if (field == 2) read_trainer_spec(sub, offset, name, specs);
      if (field == 3) read_normalizer_spec(sub, offset, name, specs);
    } else {
      r.skip(wire);
    }
  }
  const auto n = static_cast<int64_t>(data.tokens.size());
  auto bad = [&](const std::string& what) { STRATA_THROW(ErrorKind::kFormat, name, ": ", what); };
  if (n == 0) bad("SentencePiece model has no pieces");
  if (specs.model_type != 2)
    bad(cat("SentencePiece model_type is ", specs.model_type == 1 ? "UNIGRAM" : std::to_string(specs.model_type),
            "; only BPE models (Llama-2 style) are supported"));
  if (specs.treat_whitespace_as_suffix) bad("treat_whitespace_as_suffix models are not supported");
  const std::pair<const char*, int32_t> ids[] = {
      {"unk_id", specs.unk_id}, {"bos_id", specs.bos_id}, {"eos_id", specs.eos_id}, {"pad_id", specs.pad_id}};
  for (const auto& [key, id] : ids)
    if (id < -1 || id >= n) bad(cat("trainer_spec.", key, " ", id, " is outside the ", n, " pieces"));
  data.unk_id = specs.unk_id;
  data.bos_id = specs.bos_id;
  data.eos_id = specs.eos_id;
  data.pad_id = specs.pad_id;
  // sentencepiece itself adds no BOS; Llama models expect one, as HF's LlamaTokenizer adds.
  data.add_bos = data.bos_id >= 0;
  data.add_eos = false;
  data.add_space_prefix = specs.add_dummy_prefix;
  data.space_prefix_rule = SpacePrefixRule::kAlways;
  data.remove_extra_whitespaces = specs.remove_extra_whitespaces;
  return data;
}

TokenizerData load_sentencepiece_model(const std::string& path) {
  return parse_sentencepiece_model(read_file_bytes(path, "SentencePiece model"), path);
}

}  // namespace strata
