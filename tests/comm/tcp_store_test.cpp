// tests/comm/tcp_store_test.cpp: the rendezvous store admits only clients that know the job's secret,
// refuses oversized keys and values before allocating them and caps what it holds in all, listens only
// on MASTER_ADDR's interface, and stops listening once closed (after the ranks have met).
#include <gtest/gtest.h>

#include <cstring>

#include "tests/comm/tcp_test_ranks.h"
#include "tests/test_util.h"

namespace strata::comm {
namespace {

int connect_raw(uint16_t port, const char* ip = "127.0.0.1") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, ip, &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// A request as the wire format has it: op, key length, value length (the body follows, or not).
std::string header(uint8_t op, uint32_t klen, uint64_t vlen) {
  std::string h(13, '\0');
  h[0] = static_cast<char>(op);
  std::memcpy(h.data() + 1, &klen, 4);
  std::memcpy(h.data() + 5, &vlen, 8);
  return h;
}

void send_bytes(int fd, const std::string& bytes) { ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size())); }

// Everything the store sends until it closes the connection.
std::string read_until_closed(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

constexpr uint8_t kSet = 1, kGet = 2, kHello = 4;

TEST(TcpStoreSecurity, AWrongSecretIsRefusedNamingTheVariable) {
  TcpStore host("127.0.0.1", 0, true, 5, "right");
  host.set("k", "v");
  try {
    TcpStore other("127.0.0.1", host.port(), false, 2, "wrong");
    FAIL() << "a client with another secret must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kComm) << e.what();
    EXPECT_NE(std::string(e.what()).find("STRATA_STORE_SECRET differs"), std::string::npos) << e.what();
  }
  TcpStore good("127.0.0.1", host.port(), false, 2, "right");
  EXPECT_EQ(good.get("k"), "v");
  EXPECT_THROW(TcpStore("127.0.0.1", 0, true, 1, ""), Error);  // no secret, no store
}

TEST(TcpStoreSecurity, StrangersCanNeitherReadNorMakeItAllocate) {
  TcpStore host("127.0.0.1", 0, true, 5, "job-secret");
  host.set("mesh/0", "10.0.0.1:1234");
  // A get without the secret: the connection is closed, nothing is sent back.
  {
    const int fd = connect_raw(host.port());
    ASSERT_GE(fd, 0);
    send_bytes(fd, header(kGet, 6, 0) + "mesh/0");
    EXPECT_EQ(read_until_closed(fd), "");
    close(fd);
  }
  // Three headers announcing 1 GiB values, without the secret: closed at the first, before any body.
  {
    const int fd = connect_raw(host.port());
    send_bytes(fd, header(kSet, 1, uint64_t{1} << 30) + header(kSet, 1, uint64_t{1} << 30) + header(kSet, 1, uint64_t{1} << 30));
    EXPECT_EQ(read_until_closed(fd), "");
    close(fd);
  }
  // A hello whose "secret" is a gigabyte long: closed as well.
  {
    const int fd = connect_raw(host.port());
    send_bytes(fd, header(kHello, 0, uint64_t{1} << 30));
    EXPECT_EQ(read_until_closed(fd), "");
    close(fd);
  }
  // With the secret, an oversized value is refused with a reason (status 1), before its body arrives.
  {
    const int fd = connect_raw(host.port());
    send_bytes(fd, header(kHello, 0, 10) + "job-secret");
    char ok[9];
    ASSERT_EQ(recv(fd, ok, 9, MSG_WAITALL), 9);
    EXPECT_EQ(ok[0], 0);
    send_bytes(fd, header(kSet, 1, kStoreMaxValueBytes + 1) + "k");
    const std::string reply = read_until_closed(fd);
    ASSERT_GE(reply.size(), 9u);
    EXPECT_EQ(reply[0], 1);
    EXPECT_NE(reply.find("exceed the store's limits"), std::string::npos) << reply;
    close(fd);
  }
  TcpStore rank("127.0.0.1", host.port(), false, 2, "job-secret");
  EXPECT_EQ(rank.get("mesh/0"), "10.0.0.1:1234");
}

TEST(TcpStoreSecurity, WhatItHoldsInAllIsCapped) {
  TcpStore host("127.0.0.1", 0, true, 10, "s");
  const std::string value(kStoreMaxValueBytes - 16, 'x');
  size_t stored = 0;
  try {
    for (int i = 0; i < 100; ++i) {
      host.set("big/" + std::to_string(i), value);
      stored += value.size();
    }
    FAIL() << "100 MiB went into a store capped at " << kStoreMaxTotalBytes;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("would pass its limit"), std::string::npos) << e.what();
  }
  EXPECT_LE(stored, kStoreMaxTotalBytes);
  EXPECT_GE(stored + 2 * value.size(), kStoreMaxTotalBytes);
  TcpStore again("127.0.0.1", host.port(), false, 2, "s");  // the host still serves
  EXPECT_EQ(again.get("big/0").size(), value.size());
}

TEST(TcpStoreSecurity, ListensOnMasterAddrsInterfaceOnlyAndClosesWhenAsked) {
  TcpStore host("127.0.0.1", 0, true, 2, "s");
  const std::string ip = test::non_loopback_ipv4();
  if (!ip.empty()) {
    const int fd = connect_raw(host.port(), ip.c_str());
    EXPECT_LT(fd, 0) << "the store bound to 127.0.0.1 is reachable on " << ip;
    if (fd >= 0) close(fd);
  }
  const int fd = connect_raw(host.port());
  EXPECT_GE(fd, 0);
  if (fd >= 0) close(fd);
  host.close_server();
  EXPECT_LT(connect_raw(host.port()), 0);
  EXPECT_THROW(TcpStore("127.0.0.1", host.port(), false, 0.5, "s"), Error);
}

}  // namespace
}  // namespace strata::comm
