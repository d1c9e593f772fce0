// tests/launcher/request_images_test.cpp: the pieces of image requests below the server: base64 (RFC 4648's
// test vectors), SipHash-2-4 (the reference vectors of Aumasson and Bernstein's paper and implementation),
// and the chat template's image placeholders against transformers' apply_chat_template on the
// tests/fixtures/vision/llava_chat tokenizer (tools/reference/make_vision_chat_fixture.py).
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fstream>
#include <sstream>

#include "launcher/http/chat_template.h"
#include "launcher/http/request_images.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "test_util.h"

namespace strata::launcher::http {
namespace {

std::string as_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

TEST(RequestImages, Base64DecodesTheRfcVectorsAndRefusesOtherText) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"Zg==", "f"},     {"Zm8=", "fo"},
                                                         {"Zm9v", "foo"},  {"Zm9vYg==", "foob"},
                                                         {"Zm9vYmE=", "fooba"}, {"Zm9vYmFy", "foobar"}};
  for (const auto& [encoded, plain] : vectors) {
    const auto got = decode_base64(encoded);
    ASSERT_TRUE(got.has_value()) << encoded;
    EXPECT_EQ(as_string(*got), plain) << encoded;
  }
  EXPECT_EQ(as_string(*decode_base64("Zm9vYg")), "foob");  // padding optional
  for (const char* bad : {"Zm9v!", "Z", "Zm 9v", "Zm9v\n", "Zm9v-_"}) EXPECT_FALSE(decode_base64(bad).has_value()) << bad;
}

TEST(RequestImages, SipHashGivesTheReferenceVectors) {
  const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};  // bytes 00..0f
  uint8_t message[15];
  for (int i = 0; i < 15; ++i) message[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(siphash(key, message, 0), 0x726fdb47dd0e0e31ull);
  EXPECT_EQ(siphash(key, message, 1), 0x74f839c593dc67fdull);
  EXPECT_EQ(siphash(key, message, 2), 0x0d6c8009d9a94f5aull);
  EXPECT_EQ(siphash(key, message, 15), 0xa129ca6149be45e5ull);  // the paper's worked example
}

TEST(RequestImages, ChatTemplatePlacesImagesAsTransformersDoes) {
  const std::string dir = test::fixture("vision/llava_chat");
  std::ifstream in(dir + "/chat.json");
  std::stringstream text;
  text << in.rdbuf();
  const boost::json::value fixture = boost::json::parse(text.str());
  const auto tokenizer = Tokenizer::create(*open_checkpoint(dir)->tokenizer());
  ChatTemplate chat = ChatTemplate::detect(*tokenizer);
  ASSERT_EQ(chat.format(), ChatFormat::kChatMl);
  chat.set_image_token(static_cast<int32_t>(fixture.at("image_token_id").as_int64()));
  for (const auto& request : fixture.at("requests").as_array()) {
    GenerationParams params;
    ApiError error;
    const std::string body = boost::json::serialize(boost::json::object{{"messages", request.at("messages")}});
    ASSERT_TRUE(parse_generation(body, true, params, error)) << error.message;
    std::vector<int32_t> expected;
    for (const auto& id : request.at("prompt_ids").as_array()) expected.push_back(static_cast<int32_t>(id.as_int64()));
    EXPECT_EQ(chat.render(params.messages), expected) << request.at("name");
  }
  // A template without an image token refuses image parts.
  GenerationParams params;
  ApiError error;
  ASSERT_TRUE(parse_generation(boost::json::serialize(boost::json::object{
                                   {"messages", fixture.at("requests").at(0).at("messages")}}),
                               true, params, error));
  EXPECT_THROW(ChatTemplate::detect(*tokenizer).render(params.messages), strata::Error);
}

}  // namespace
}  // namespace strata::launcher::http
