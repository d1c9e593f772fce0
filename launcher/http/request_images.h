// launcher/http/request_images.h: the image parts of a chat request turned into what the Engine takes: each
// image read (an inline data: URL, a file under the operator's --image-dir, or an http(s) URL fetched from a
// host the operator allows with --image-url-hosts, image_fetch.h),
// checked against the server's limits (encoded bytes, the pixels its header declares, images per request),
// decoded, preprocessed as the checkpoint's image processor says and hashed for the prefix cache; and the
// prompt's image placeholders expanded to one token per image feature (a count that may depend on the
// image's size). Runs on the request workers, never
// on the HTTP I/O threads. Every refusal is an ApiError (400) naming the field and what to send instead.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "launcher/http/openai_schema.h"
#include "runtime/request.h"
#include "runtime/vision/image.h"
#include "runtime/vision/preprocess.h"

namespace strata::launcher::http {

struct ImageServeOptions {
  std::string image_dir;          // local paths are served from under it only; empty: refused
  vision::ImageLimits limits;     // encoded bytes, and width x height as the header declares
  int64_t max_images = 8;         // per request
  std::vector<std::string> url_hosts;  // hosts http(s) images are fetched from (image_fetch.h); empty: refused
  double url_timeout_s = 10;           // one remote image's whole fetch
  std::string url_ca_file;             // extra PEM certificates trusted for https images
};

// The served model's vision side.
struct ServedVision {
  int32_t image_token_id = -1;
  // Features an image of (height, width) pixels yields: the tokens its placeholder expands to (fixed for
  // LLaVA-1.5, size-dependent for LLaVA-NeXT).
  std::function<int64_t(int64_t height, int64_t width)> features_for;
  vision::ImageProcessorConfig processor;
};

class RequestImages {
 public:
  // `vision` absent: a text-only model, which refuses every image.
  RequestImages(ImageServeOptions options, std::optional<ServedVision> vision);

  bool takes_images() const { return vision_.has_value(); }
  // Checks what can be checked before the prompt is rendered (the model takes images, how many).
  std::optional<ApiError> check(const std::vector<ChatMessage>& messages) const;
  // `prompt` holds one placeholder per image part of `messages`, in order; on success it is expanded and
  // `images` holds each image's pixels, hash and prompt positions.
  std::optional<ApiError> resolve(const std::vector<ChatMessage>& messages, std::vector<int32_t>& prompt,
                                  std::vector<RequestImage>& images) const;
  // Whether resolve() will fetch some image of `messages` from a remote host (fetching on, an http(s) URL).
  bool fetches_remote(const std::vector<ChatMessage>& messages) const;
  // The encoded bytes an image URL names; throws strata::Error (kInvalidArgument) saying why not.
  std::vector<uint8_t> load(const std::string& url) const;

 private:
  ImageServeOptions options_;
  std::optional<ServedVision> vision_;
  std::string image_root_;  // canonical image_dir
  uint64_t hash_key_[2];    // drawn at start: image hashes cannot be precomputed to collide
};

// Standard base64 (RFC 4648, padding optional, no white space); nullopt when `text` is not base64.
std::optional<std::vector<uint8_t>> decode_base64(std::string_view text);
// SipHash-2-4 of `bytes` under a 128-bit key.
uint64_t siphash(const uint64_t key[2], const void* bytes, size_t size);

}  // namespace strata::launcher::http
