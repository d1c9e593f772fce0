// tests/runtime/formats/hf_quant_memory_test.cpp: what a quantized Hugging Face checkpoint's transcoded layers
// cost in memory and time (issue 23): a layer's pages go back once nothing holds a view or pin of it (checked
// on the in-memory file's allocated blocks, not only the checkpoint's counter), a later read builds the same
// bytes again, the CPU backend's repacked copy lets them go while the offload disk tier keeps what it streams,
// and transcoding on several threads writes the bytes one thread does.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/json.hpp>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "launcher/model_session.h"
#include "offload/residency.h"
#include "runtime/formats/checkpoint.h"
#include "tests/test_util.h"

namespace strata {
namespace {

namespace json = boost::json;

const char* const kFixtures[] = {"gptq_int4_g32_sym", "gptq_int4_g64_asym", "gptq_int8_pc_v2", "gptq_int4_actorder",
                                 "awq_int4_g64",      "fp8_block128",       "ct_fp8_channel",  "ct_w8a8_int8",
                                 "ct_w4a16_g32",      "ct_w4a16_g64_asym"};

std::string fixture(const std::string& name) { return test::fixture("hf_quant/" + name); }

// Memory the in-memory file behind `e` holds now, as the kernel counts it (its allocated blocks).
uint64_t allocated(const TensorEntry& e) {
  struct stat st {};
  EXPECT_EQ(::stat(e.file.c_str(), &st), 0) << e.file;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

std::vector<int32_t> ints(const json::value& v) {
  std::vector<int32_t> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int32_t>(x.as_int64()));
  return out;
}

// The fixture's prompt and transformers' greedy continuation of it, as a request for that many tokens.
std::pair<GenerationRequest, std::vector<int32_t>> greedy_case(const std::string& dir) {
  std::ifstream in(dir + "/ids.json");
  std::stringstream s;
  s << in.rdbuf();
  const json::object info = json::parse(s.str()).as_object();
  GenerationRequest r;
  r.prompt = ints(info.at("greedy_prompt"));
  std::vector<int32_t> want = ints(info.at("greedy_continuation"));
  r.max_new_tokens = static_cast<int64_t>(want.size());
  return {r, want};
}

TEST(HfQuantMemory, LastViewGoneHandsThePagesBackAndAReReadBuildsTheSameBytes) {
  for (const char* name : {"gptq_int4_g32_sym", "ct_w4a16_g64_asym", "fp8_block128", "gptq_int4_actorder"}) {
    SCOPED_TRACE(name);
    const auto ck = open_checkpoint(fixture(name));
    const TensorEntry& e = ck->entry("blk.1.ffn_down.weight");
    ASSERT_TRUE(e.built_on_access);
    EXPECT_EQ(allocated(e), 0u);
    std::vector<uint8_t> first;
    {
      const Tensor whole = ck->tensor(e.name);
      first = bytes_of(whole);
      const Tensor rows = ck->tensor_rows(e.name, 1, 2);  // a second view of a built layer builds nothing
      EXPECT_EQ(ck->tensors_built(), 1u);
      EXPECT_EQ(ck->bytes_held(), e.nbytes);
      EXPECT_GE(allocated(e), e.nbytes);
    }
    EXPECT_EQ(ck->bytes_held(), 0u);
    EXPECT_EQ(allocated(e), 0u) << "the layer's pages are still allocated after its last view went";

    // A reader that kept only a view (the offload expert cache, the CPU computing on the mapping) or a pin (the
    // disk tier reading by offset) keeps the bytes while another view comes and goes.
    const std::shared_ptr<void> pin = ck->materialize(e.name);
    EXPECT_EQ(ck->tensors_built(), 2u);
    { EXPECT_EQ(bytes_of(ck->tensor(e.name)), first) << "a rebuild differs from the first build"; }
    EXPECT_EQ(ck->tensors_built(), 2u);
    EXPECT_EQ(ck->bytes_held(), e.nbytes);
    const Tensor again = ck->tensor(e.name);
    EXPECT_EQ(bytes_of(again), first) << "a pinned layer was handed back under its reader";
  }
}

// The bytes do not depend on the thread count: every layer of every fixture, 1 thread against 2, 3 and 8
// (more threads than some layers have rows).
TEST(HfQuantMemory, TranscodingOnSeveralThreadsWritesTheBytesOfOne) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const auto one = open_checkpoint(fixture(name), CheckpointOptions{1});
    for (int threads : {2, 3, 8}) {
      const auto many = open_checkpoint(fixture(name), CheckpointOptions{threads});
      int compared = 0;
      for (const TensorEntry& e : one->entries()) {
        if (!e.built_on_access) continue;
        EXPECT_EQ(bytes_of(many->tensor(e.name)), bytes_of(one->tensor(e.name))) << e.name << ", " << threads
                                                                                   << " threads";
        ++compared;
      }
      EXPECT_EQ(compared, 14);
    }
  }
}

// A resident CPU session: the repacked copy is all matmul reads, so every q4_0/q5_0/q8_0 layer's transcoded
// pages go back once loaded, while f8_e4m3_b128 and f32 layers (computed on the mapping) stay. Without the
// repacked copy everything stays. Either way generation is transformers' greedy continuation.
TEST(HfQuantMemory, CpuRepackedLayersAreNotHeldTwice) {
  for (const char* name : {"gptq_int4_g32_sym", "ct_w8a8_int8", "fp8_block128"}) {
    for (const bool repack : {true, false}) {
      SCOPED_TRACE(std::string(name) + (repack ? " repacked" : " on the mapping"));
      launcher::SessionOptions options;
      options.model_path = fixture(name);
      options.backend.cpu_repack = repack;
      launcher::ModelSession session(options);
      const Checkpoint& ck = session.checkpoint();
      uint64_t transcoded = 0, kept = 0;
      for (const TensorEntry& e : ck.entries()) {
        if (!e.built_on_access) continue;
        transcoded += e.nbytes;
        if (!repack || e.dtype == DType::kF8_B128 || e.dtype == DType::kF32) kept += e.nbytes;
      }
      EXPECT_EQ(ck.bytes_built(), transcoded);
      EXPECT_EQ(ck.bytes_held(), kept);
      session.prepare(64);
      const auto [r, want] = greedy_case(fixture(name));
      EXPECT_EQ(session.generator().generate({r})[0].tokens, want);
    }
  }
}

// The offload disk tier streams layer 1 from the in-memory file by offset, into a ring slot it overwrites every
// token: the layer must stay built under it (never read back as the zeros of a handed-back page).
TEST(HfQuantMemory, TheDiskTierKeepsTheLayersItStreams) {
  const std::string dir = fixture("gptq_int4_g32_sym");
  launcher::SessionOptions options;
  options.model_path = dir;
  offload::ResidencyConfig residency;
  residency.cold_tier = offload::Tier::kDisk;
  residency.rules = {{"blk.1.*", offload::Tier::kDisk}};
  options.offload = residency;
  launcher::ModelSession session(options);
  uint64_t streamed = 0;
  for (const TensorEntry& e : session.checkpoint().entries())
    if (e.built_on_access && e.name.rfind("blk.1.", 0) == 0) streamed += e.nbytes;
  ASSERT_GT(streamed, 0u);
  // Layer 0 on the "device" (the CPU computing on the mapping) and layer 1 on the disk tier: all of it stays.
  EXPECT_EQ(session.checkpoint().bytes_held(), session.checkpoint().bytes_built());
  session.prepare(64);
  const auto [r, want] = greedy_case(dir);
  EXPECT_EQ(session.generator().generate({r})[0].tokens, want);
  EXPECT_EQ(session.checkpoint().bytes_held(), session.checkpoint().bytes_built());
}

}  // namespace
}  // namespace strata
