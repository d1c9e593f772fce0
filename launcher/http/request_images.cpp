// launcher/http/request_images.cpp: image parts -> RequestImages (request_images.h).
#include "launcher/http/request_images.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <random>

#include "launcher/http/image_fetch.h"
#include "runtime/error.h"

namespace strata::launcher::http {
namespace fs = std::filesystem;
namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), s.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}

std::string shown(const std::string& url) {  // a URL in a message: data URLs are long
  return url.size() > 48 ? url.substr(0, 45) + "..." : url;
}

uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

std::vector<uint8_t> read_limited(const fs::path& path, const std::string& given, int64_t max_bytes) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, !ec, "cannot read image file '", given, "': ", ec.message());
  STRATA_CHECK(static_cast<int64_t>(size) <= max_bytes, "image file '", given, "' has ", size,
               " bytes, over this server's --max-image-bytes of ", max_bytes, "; send a smaller image");
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), "cannot open image file '", given, "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  STRATA_CHECK(in.gcount() == static_cast<std::streamsize>(bytes.size()), "cannot read image file '", given, "'");
  return bytes;
}

}  // namespace

std::optional<std::vector<uint8_t>> decode_base64(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : text) {
    int v = -1;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+') v = 62;
    else if (ch == '/') v = 63;
    else return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

uint64_t siphash(const uint64_t key[2], const void* bytes, size_t size) {
  uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
  uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
  auto round = [&] {
    v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
    v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
    v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
    v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
  };
  const auto* p = static_cast<const uint8_t*>(bytes);
  auto word = [&](size_t at, size_t n) {
    uint64_t m = 0;
    for (size_t i = 0; i < n; ++i) m |= static_cast<uint64_t>(p[at + i]) << (8 * i);
    return m;
  };
  const size_t whole = size / 8 * 8;
  for (size_t at = 0; at < whole; at += 8) {
    const uint64_t m = word(at, 8);
    v3 ^= m;
    round(), round();
    v0 ^= m;
  }
  const uint64_t last = word(whole, size - whole) | (static_cast<uint64_t>(size) << 56);
  v3 ^= last;
  round(), round();
  v0 ^= last;
  v2 ^= 0xff;
  round(), round(), round(), round();
  return v0 ^ v1 ^ v2 ^ v3;
}

RequestImages::RequestImages(ImageServeOptions options, std::optional<ServedVision> vision)
    : options_(std::move(options)), vision_(std::move(vision)) {
  if (!options_.image_dir.empty()) {
    std::error_code ec;
    image_root_ = fs::canonical(options_.image_dir, ec).string();
    STRATA_CHECK(!ec && fs::is_directory(image_root_), "--image-dir '", options_.image_dir,
                 "' is not a directory: ", ec ? ec.message() : "not a directory");
  }
  if (!options_.url_ca_file.empty())
    STRATA_CHECK(fs::is_regular_file(options_.url_ca_file), "--image-url-ca-file '", options_.url_ca_file,
                 "' is not a file; give a PEM file of CA certificates");
  std::random_device entropy;
  for (uint64_t& k : hash_key_) k = (static_cast<uint64_t>(entropy()) << 32) ^ entropy();
}

std::optional<ApiError> RequestImages::check(const std::vector<ChatMessage>& messages) const {
  int64_t count = 0;
  const ImagePart* first = nullptr;
  for (const ChatMessage& m : messages)
    for (const ImagePart& image : m.images) {
      if (first == nullptr) first = &image;
      ++count;
    }
  if (count == 0) return std::nullopt;
  if (!vision_)
    return bad_request(first->param, "this model has no vision tower, so it takes no images; send text only, or "
                                     "serve a vision-language (LLaVA-style) checkpoint");
  if (count > options_.max_images)
    return bad_request("messages", cat("the request has ", count, " images; this server takes at most ",
                                       options_.max_images, " per request (--max-images-per-request)"));
  return std::nullopt;
}

bool RequestImages::fetches_remote(const std::vector<ChatMessage>& messages) const {
  if (!vision_ || options_.url_hosts.empty()) return false;
  for (const ChatMessage& m : messages)
    for (const ImagePart& image : m.images)
      if (starts_with_nocase(image.url, "http://") || starts_with_nocase(image.url, "https://")) return true;
  return false;
}

std::vector<uint8_t> RequestImages::load(const std::string& url) const {
  const int64_t max_bytes = options_.limits.max_bytes;
  if (starts_with_nocase(url, "data:")) {
    const size_t comma = url.find(',');
    STRATA_CHECK(comma != std::string::npos, "the data URL '", shown(url), "' has no ',' before its data");
    const std::string_view header(url.data() + 5, comma - 5);  // data:[media type][;base64],
    STRATA_CHECK(header.size() >= 7 && starts_with_nocase(header.substr(header.size() - 7), ";base64"),
                 "the data URL '", shown(url), "' is not base64; send data:image/png;base64,... (or jpeg, webp)");
    const std::string_view media = header.substr(0, header.size() - 7);
    STRATA_CHECK(media.empty() || starts_with_nocase(media, "image/"), "the data URL '", shown(url),
                 "' is not an image (media type '", media, "'); send data:image/png;base64,... (or jpeg, webp)");
    const std::string_view data(url.data() + comma + 1, url.size() - comma - 1);
    // Checked before decoding: the encoded size is 3/4 of the base64 text.
    const int64_t approx = static_cast<int64_t>(data.size() / 4 * 3);
    STRATA_CHECK(approx <= max_bytes + 2, "the image is about ", approx, " bytes, over this server's "
                 "--max-image-bytes of ", max_bytes, "; send a smaller image");
    std::optional<std::vector<uint8_t>> bytes = decode_base64(data);
    STRATA_CHECK(bytes.has_value(), "the data URL's data is not valid base64 (A-Z a-z 0-9 + /, '=' padding, "
                 "no white space)");
    STRATA_CHECK(static_cast<int64_t>(bytes->size()) <= max_bytes, "the image has ", bytes->size(),
                 " bytes, over this server's --max-image-bytes of ", max_bytes, "; send a smaller image");
    return std::move(*bytes);
  }
  if (starts_with_nocase(url, "http://") || starts_with_nocase(url, "https://")) {
    // The fetched bytes take the data URL's path from here: decoding, every limit, the prefix-cache hash.
    ImageFetchOptions fetch;
    fetch.hosts = options_.url_hosts;
    fetch.timeout_s = options_.url_timeout_s;
    fetch.ca_file = options_.url_ca_file;
    fetch.max_bytes = max_bytes;
    return fetch_image(url, fetch);
  }
  std::string path = url;
  if (starts_with_nocase(url, "file://")) {
    path = url.substr(7);
    if (starts_with_nocase(path, "localhost/")) path = path.substr(9);
  } else {
    STRATA_CHECK(url.find("://") == std::string::npos, "unsupported image URL '", shown(url),
                 "'; send a data URL (data:image/png;base64,...)");
  }
  STRATA_CHECK(!image_root_.empty(), "this server reads no image files ('", shown(url), "'): the operator has "
               "not given --image-dir; send the image inline as a data URL (data:image/png;base64,...)");
  STRATA_CHECK(!path.empty() && path.find('\0') == std::string::npos, "empty image path");
  // Relative paths are under the image directory; absolute ones must be. Symbolic links are resolved
  // before the check, so neither '..' nor a link leads outside.
  // The path is checked as written first (so nothing outside is even looked up), then with links resolved.
  auto inside = [&](const fs::path& p) {
    const fs::path rel = p.lexically_relative(image_root_);
    return !rel.empty() && *rel.begin() != ".." && rel.is_relative();
  };
  const fs::path full = (fs::path(path).is_absolute() ? fs::path(path) : fs::path(image_root_) / path).lexically_normal();
  const std::string outside = cat("the image path '", path, "' leads outside --image-dir; name a file under it");
  STRATA_CHECK(inside(full), outside);
  std::error_code ec;
  const fs::path real = fs::canonical(full, ec);
  STRATA_CHECK(!ec, "no image file '", path, "' under --image-dir (", ec.message(), ")");
  STRATA_CHECK(inside(real), outside);
  STRATA_CHECK(fs::is_regular_file(real), "the image path '", path, "' is not a regular file");
  return read_limited(real, path, max_bytes);
}

std::optional<ApiError> RequestImages::resolve(const std::vector<ChatMessage>& messages, std::vector<int32_t>& prompt,
                                               std::vector<RequestImage>& images) const {
  if (std::optional<ApiError> e = check(messages)) return e;
  std::vector<const ImagePart*> parts;
  for (const ChatMessage& m : messages)
    for (const ImagePart& image : m.images) parts.push_back(&image);
  if (parts.empty()) return std::nullopt;
  const ServedVision& v = *vision_;
  images.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    RequestImage image;
    try {
      const std::vector<uint8_t> bytes = load(parts[i]->url);
      const vision::RgbImage rgb = vision::decode_image(bytes, cat("image ", i), options_.limits);
      image.pixels = vision::preprocess_image(rgb, v.processor);
      image.height = static_cast<int32_t>(rgb.height);
      image.width = static_cast<int32_t>(rgb.width);
      image.length = static_cast<int32_t>(v.features_for(rgb.height, rgb.width));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kInvalidArgument && e.kind() != ErrorKind::kFormat && e.kind() != ErrorKind::kIo &&
          e.kind() != ErrorKind::kConfig)
        throw;
      return bad_request(parts[i]->param, e.what());
    }
    // What the tower sees is what decides the KV: equal pixel values share cached blocks.
    // LLaVA-NeXT's unpad step also reads the image's size, so it joins the key.
    const uint64_t keyed[3] = {siphash(hash_key_, image.pixels.raw(), static_cast<size_t>(image.pixels.nbytes())),
                               static_cast<uint64_t>(image.height), static_cast<uint64_t>(image.width)};
    image.hash = siphash(hash_key_, keyed, sizeof keyed);
    images.push_back(std::move(image));
  }
  std::vector<int32_t> expanded;
  size_t next = 0;
  for (int32_t id : prompt) {
    if (id != v.image_token_id) {
      expanded.push_back(id);
      continue;
    }
    if (next == images.size())
      return bad_request("messages", cat("the prompt holds more image placeholders (token ", v.image_token_id,
                                         ") than the request has images"));
    images[next++].position = static_cast<int32_t>(expanded.size());
    expanded.insert(expanded.end(), static_cast<size_t>(images[next - 1].length), id);
  }
  if (next != images.size())
    return bad_request("messages", cat("the chat template placed ", next, " image placeholders for ", images.size(),
                                       " images"));
  prompt = std::move(expanded);
  return std::nullopt;
}

}  // namespace strata::launcher::http
