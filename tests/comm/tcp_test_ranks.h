// tests/comm/tcp_test_ranks.h: runs N ranks of a TCP world as threads of one test process (each with
// its own store client, mesh and communicator), and finds a free localhost port.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "comm/tcp/tcp_communicator.h"
#include "comm/tcp_store.h"
#include "runtime/error.h"

namespace strata::comm::testing {

// A port nobody listens on right now (the kernel's pick; a tiny race with other processes is fine).
inline uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Rank 0 hosts the store on a kernel-chosen port; the others connect to it.
inline void run_tcp_ranks(int n, const CommConfig& config, const std::function<void(int, Communicator&)>& body) {
  auto host = std::make_shared<TcpStore>("127.0.0.1", 0, true, config.timeout_s, "test-secret");
  const uint16_t port = host->port();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto store = r == 0 ? host : std::make_shared<TcpStore>("127.0.0.1", port, false, config.timeout_s, "test-secret");
        auto comm = make_tcp_world(config, store, r, n);
        body(r, *comm);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    if (!errors[static_cast<size_t>(r)]) continue;
    try {
      std::rethrow_exception(errors[static_cast<size_t>(r)]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << r << " threw: " << e.what();
    }
  }
}

}  // namespace strata::comm::testing
