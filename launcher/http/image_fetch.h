// launcher/http/image_fetch.h: remote images for chat requests, fetched only when the operator allows hosts
// (--image-url-hosts). http:// and https:// (OpenSSL, where the build has it; the system's CA store, the host
// name verified), at most three redirects (each one checked again), the body capped at --max-image-bytes, one
// deadline for the whole fetch. The SSRF guard: a host that resolves to a loopback, private, link-local or otherwise internal address
// is fetched only when the operator names it; the wildcard `*` and `*.domain` patterns never reach those
// addresses. Clients see
// why a fetch failed in words, never peer addresses or the network stack's errors (those go to the log).
// Known bound: a name lookup, once started, ends only when the system resolver gives up (resolv.conf's
// timeouts), so a hung DNS server can hold a request worker past --image-url-timeout.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata::launcher::http {

struct ImageFetchOptions {
  std::vector<std::string> hosts;  // lower-case host names, IP literals, "*" or "*.domain"; empty: no fetching
  double timeout_s = 10;           // the whole fetch, redirects included
  int64_t max_bytes = 20 << 20;    // the body, as --max-image-bytes
  std::string ca_file;             // PEM certificates trusted for https besides the system's CA store
};

// "a.example, 127.0.0.1,*" -> {"a.example", "127.0.0.1", "*"} (lower-case, trimmed; IPv6 brackets dropped).
// A '*' may stand alone (any host) or begin a "*.domain" pattern; anywhere else it throws strata::Error
// (kInvalidArgument) naming the entry.
std::vector<std::string> parse_host_list(const std::string& list);

// How `host` (lower-case) stands with an allowed-host list: named in it (exactly), matched by "*" or by a
// "*.domain" pattern (any name under the domain, not the domain itself; never an IP literal), or neither.
// Only a named host may resolve to an internal address.
enum class HostMatch { kNone, kPattern, kNamed };
HostMatch match_host(const std::vector<std::string>& hosts, const std::string& host);

// Whether a fetched host's address may be reached only when the operator named the host: loopback, private
// (RFC 1918, unique local), link-local, carrier-grade NAT, unspecified, multicast, reserved and broadcast
// addresses, and IPv6 forms that embed such an IPv4 address (mapped, NAT64, 6to4). `address` is an IPv4 or
// IPv6 literal; text that is neither counts as internal.
bool is_internal_address(const std::string& address);

// Whether this build fetches https:// (it was built with OpenSSL); without, https URLs are refused.
bool image_fetch_speaks_tls();

// The encoded bytes at an http(s) URL; throws strata::Error (kInvalidArgument) with a message for the client.
std::vector<uint8_t> fetch_image(const std::string& url, const ImageFetchOptions& options);

}  // namespace strata::launcher::http
