// tests/runtime/vision/engine_images_test.cpp: the serving Engine with image requests, below the server: the
// five chat requests of tests/fixtures/vision/llava_chat (tools/reference/make_vision_chat_fixture.py) in
// flight together, images and text mixed in steps of chunked prefill, on a KV cache too small for all of them
// (so sequences are preempted and recompute their image positions from the kept features), each giving
// transformers' greedy continuation.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/models/llava_image_encoder.h"
#include "runtime/vision/preprocess.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<int32_t> ids(const boost::json::value& v) {
  std::vector<int32_t> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return out;
}

TEST(EngineImages, MixedRequestsUnderPreemptionGiveTransformersTokens) {
  const std::string dir = test::fixture("vision/llava_chat");
  std::ifstream in(dir + "/chat.json");
  std::stringstream text;
  text << in.rdbuf();
  const boost::json::value fixture = boost::json::parse(text.str());
  const int32_t image_token = static_cast<int32_t>(fixture.at("image_token_id").as_int64());
  const int32_t per_image = static_cast<int32_t>(fixture.at("features_per_image").as_int64());

  launcher::SessionOptions options;
  options.model_path = dir;
  options.generator.max_step_tokens = 20;
  options.block_size = 4;  // prefill in chunks: an image's positions span steps
  launcher::ModelSession session(options);
  // 24 blocks of 4 tokens: two requests of ~50 tokens cannot both finish; their decodes preempt.
  session.prepare(24 * 4);
  const std::optional<LlavaConfig> llava = launcher::llava_config_of(dir);
  ASSERT_TRUE(llava.has_value());
  LlavaImageEncoder encoder(*llava, session.backend(), dir);
  Engine& engine = session.generator().engine();
  engine.set_image_encoder(&encoder);
  const vision::ImageProcessorConfig processor = vision::load_image_processor_config(dir);

  std::map<uint64_t, std::vector<int32_t>> expected, got;
  std::map<std::string, uint64_t> hash_of;  // one hash per file: equal images share cached blocks
  uint64_t id = 0;
  int64_t images = 0;
  for (const auto& request : fixture.at("requests").as_array()) {
    EngineRequest r;
    r.id = ++id;
    r.prompt = ids(request.at("ids"));  // placeholders already expanded, as the server sends them
    r.max_new_tokens = 8;
    r.sampling.temperature = 0;
    std::vector<std::string> files;
    for (const auto& m : request.at("messages").as_array())
      if (m.at("content").is_array())
        for (const auto& part : m.at("content").as_array())
          if (part.at("type").as_string() == "image_url")
            files.emplace_back(part.at("image_url").at("url").as_string());
    size_t next = 0;
    for (size_t p = 0; p < r.prompt.size(); p += r.prompt[p] == image_token ? per_image : 1) {
      if (r.prompt[p] != image_token) continue;
      ASSERT_LT(next, files.size());
      RequestImage image;
      image.pixels = vision::preprocess_image(vision::read_image_file(dir + "/" + files[next]), processor);
      image.hash = hash_of.emplace(files[next], hash_of.size() + 1).first->second;
      image.position = static_cast<int32_t>(p);
      image.length = per_image;
      r.images.push_back(image);
      ++next;
    }
    ASSERT_EQ(next, files.size());
    images += static_cast<int64_t>(files.size());
    expected[r.id] = ids(request.at("greedy"));
    ASSERT_TRUE(engine.submit(std::move(r)));
  }
  std::vector<TokenEvent> events;
  for (size_t finished = 0; finished < expected.size();) {
    events.clear();
    ASSERT_TRUE(engine.step(events, 0));
    for (const TokenEvent& e : events) {
      if (e.token >= 0) got[e.request_id].push_back(e.token);
      if (e.finished) {
        EXPECT_EQ(e.finish_reason, "length") << e.error;
        ++finished;
      }
    }
  }
  for (const auto& [request, tokens] : expected) EXPECT_EQ(got[request], tokens) << "request " << request;
  const EngineStats stats = engine.stats();
  std::printf("%lld preemptions, %lld images encoded for %lld, %lld prefix-cache hit tokens\n",
              static_cast<long long>(stats.preemptions), static_cast<long long>(stats.images_encoded),
              static_cast<long long>(images), static_cast<long long>(stats.prefix_hit_tokens));
  EXPECT_GT(stats.preemptions, 0);
  EXPECT_GE(stats.images_encoded, images);

  // A request with images on an engine without an encoder is refused with a message.
  engine.set_image_encoder(nullptr);
  EngineRequest r;
  r.id = ++id;
  r.prompt = ids(fixture.at("requests").at(0).at("ids"));
  RequestImage image;
  image.pixels = Tensor::zeros({3, 32, 32}, DType::kF32);
  image.position = 4;
  image.length = per_image;
  r.images.push_back(image);
  try {
    engine.submit(r);
    ADD_FAILURE() << "an image request was accepted without a vision tower";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no vision tower"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata
