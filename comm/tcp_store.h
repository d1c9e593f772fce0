// comm/tcp_store.h: a small rendezvous key-value store over TCP (Boost.Asio). Rank 0 hosts it at
// MASTER_ADDR:MASTER_PORT (bound to that address's interface where it is one of this host's); every rank
// (rank 0 too) is a client. Used to exchange socket addresses for the TCP mesh, then closed. Every
// connection first proves it knows the job's secret; keys, values and the whole store are size-capped,
// so a stranger on the network can neither read nor write keys nor make rank 0 allocate much.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace strata::comm {

class TcpStoreServer;

// Largest key and value a store accepts, and the most bytes it holds in all.
constexpr size_t kStoreMaxKeyBytes = 4096;
constexpr size_t kStoreMaxValueBytes = size_t{1} << 20;
constexpr size_t kStoreMaxTotalBytes = size_t{64} << 20;

class TcpStore {
 public:
  // Hosts the server first when `host_server` (port 0 picks a free port; see port()), then connects,
  // retrying with backoff for up to timeout_s (peers start in any order). Every blocking call below
  // gives up after timeout_s with Error(kTimeout) naming the key, address and port. `secret` (the same
  // non-empty string on every rank of the job) is what the server admits clients by.
  TcpStore(const std::string& host, uint16_t port, bool host_server, double timeout_s, std::string secret);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, std::string_view value);
  // Blocks until some rank sets `key`.
  std::string get(const std::string& key);
  // Atomically adds delta to the integer at `key` (absent = 0) and returns the new value.
  int64_t add(const std::string& key, int64_t delta);
  void wait(const std::vector<std::string>& keys);
  // Returns when `world_size` ranks have called barrier(name, ...); each name is used once.
  void barrier(const std::string& name, int world_size);

  // The host stops listening and drops every connection (after the ranks have met); clients' later
  // calls fail. No-op on a rank that does not host.
  void close_server();

  uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  // Calls are serialised internally; any thread may call.
  // The IP address this process uses to reach the store: the interface peers can reach us on.
  std::string local_address() const;

 private:
  struct Client;
  std::string request(uint8_t op, const std::string& key, std::string_view value, const char* what);

  std::string host_;
  std::string secret_;
  uint16_t port_;
  double timeout_s_;
  std::unique_ptr<TcpStoreServer> server_;
  std::unique_ptr<Client> client_;
};

}  // namespace strata::comm
