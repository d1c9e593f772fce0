// tests/offload/hf_quant_offload_test.cpp: a quantized Hugging Face checkpoint (issue 23) under offload: its
// transcoded layers (in a sealed in-memory file) stream from the host and the disk tier, and the run equals
// the all-resident one: greedy tokens identical, logits bitwise equal (the same kernels read the same bytes).
// The 2-layer fixtures fit any budget that runs at all, so the test stacks their layers into a 6-layer
// checkpoint (layer i is the fixture's layer i % 2; both runs read the same files).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "offload/residency.h"
#include "offload/tiered_weights.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "test_util.h"

namespace strata {
namespace {

struct RunResult {
  std::vector<GenerationOutput> outputs;
  Tensor logits;
  offload::OffloadMetrics metrics;
};

RunResult run(const std::string& path, std::optional<offload::ResidencyConfig> offload) {
  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  options.offload = offload;
  // Streamed layers are staging copies the backend never saw at load, so they take the row-at-a-time
  // kernels; the resident run must too for the bitwise comparison (the repacked copy sums in another order).
  options.backend.cpu_repack = false;
  launcher::ModelSession session(options);
  session.prepare(64);
  GenerationRequest r;
  r.prompt = {1, 17, 29, 5, 88, 41, 7};
  r.max_new_tokens = 8;
  RunResult out;
  out.outputs = session.generator().generate({r});
  out.logits = session.generator().score({1, 17, 29, 5, 88, 41, 7, 3, 3});
  if (offload::TieredWeights* t = session.offload()) out.metrics = t->metrics();
  return out;
}

// The fixture with its two layers repeated to `layers` layers, in a scratch directory.
std::string stacked_fixture(const std::string& name, int layers) {
  const std::string src = test::fixture("hf_quant/" + name);
  const std::string dst = test::temp_dir("hf_quant_stacked_" + name);
  std::filesystem::remove_all(dst);
  std::filesystem::create_directories(dst);
  const MappedFile file(src + "/model.safetensors");
  const SafetensorsHeader header = parse_safetensors_header(file.data(), file.size(), src);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const SafetensorsTensor& t : header.tensors) {
    const Tensor view = Tensor::view(const_cast<uint8_t*>(file.data()) + t.offset, t.shape, t.dtype, Device::kCpu, nullptr);
    const std::string prefix = "model.layers.";
    if (t.name.rfind(prefix, 0) != 0) {
      tensors.emplace_back(t.name, view);
      continue;
    }
    const size_t dot = t.name.find('.', prefix.size());
    const int layer = std::stoi(t.name.substr(prefix.size(), dot - prefix.size()));
    for (int l = layer; l < layers; l += 2) tensors.emplace_back(prefix + std::to_string(l) + t.name.substr(dot), view);
  }
  write_safetensors(dst + "/model.safetensors", tensors);
  std::ifstream in(src + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  boost::json::object config = boost::json::parse(text.str()).as_object();
  config["num_hidden_layers"] = layers;
  std::ofstream(dst + "/config.json") << boost::json::serialize(config);
  return dst;
}

class QuantOffload : public ::testing::TestWithParam<std::tuple<std::string, offload::Tier>> {};

TEST_P(QuantOffload, StreamedLayersMatchTheResidentRun) {
  const auto& [fixture, tier] = GetParam();
  const std::string path = stacked_fixture(fixture, 6);
  const RunResult want = run(path, std::nullopt);
  offload::ResidencyConfig config;
  config.cold_tier = tier;
  config.disk_io = offload::DiskIo::kBuffered;
  config.prefetch_depth = 1;  // a one-slot ring: with two layers, a deeper ring would hold them all
  {
    const auto ck = open_checkpoint(path);
    // The smallest budget that runs: with two small layers, any room above it keeps both resident.
    offload::ResidencyConfig unbounded = config;
    unbounded.device_budget = -1;
    const ShardSpec spec = ShardSpec::make(ck->config(), 0, 1, 0, ck->config().n_layers);
    config.device_budget = offload::place(offload::shard_items(*ck, spec), unbounded).min_device_bytes;
  }
  const RunResult got = run(path, config);
  EXPECT_EQ(got.outputs[0].tokens, want.outputs[0].tokens);
  ASSERT_EQ(got.logits.numel(), want.logits.numel());
  EXPECT_EQ(0, std::memcmp(got.logits.raw(), want.logits.raw(), static_cast<size_t>(want.logits.nbytes())));
  EXPECT_GT(got.metrics.placement.streamed_layers, 0);
  EXPECT_GT(tier == offload::Tier::kHost ? got.metrics.stream.bytes_host : got.metrics.stream.bytes_disk, 0);
}

INSTANTIATE_TEST_SUITE_P(Tiers, QuantOffload,
                         ::testing::Combine(::testing::Values("gptq_int4_g32_sym", "fp8_block128"),
                                            ::testing::Values(offload::Tier::kHost, offload::Tier::kDisk)));

}  // namespace
}  // namespace strata
