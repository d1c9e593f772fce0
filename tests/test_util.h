// tests/test_util.h: helpers shared by tests: locating fixtures and the shared models, reading
// NumPy .npy files (float32, C order) written by the reference scripts and token-id files, temp dirs,
// random tensors, this machine's addresses.
#pragma once
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace strata::test {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}
inline std::string source_dir() { return env_or("STRATA_SOURCE_DIR", "."); }
inline std::string fixture(const std::string& rel) { return source_dir() + "/tests/fixtures/" + rel; }
inline std::string shared_models() { return env_or("STRATA_SHARED_MODELS", source_dir() + "/../shared/models"); }
inline std::string temp_dir(const std::string& name) {
  const std::string dir = env_or("STRATA_TEST_TMP", std::filesystem::temp_directory_path().string()) + "/" + name;
  std::filesystem::create_directories(dir);
  return dir;
}
// Path of a file under ../shared/models, or "" when that folder is absent (the caller skips).
inline std::string shared_model(const std::string& rel) {
  const std::string p = shared_models() + "/" + rel;
  return std::filesystem::exists(p) ? p : "";
}

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Reads a little-endian float32 C-order .npy (format v1/v2).
inline NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[6];
  in.read(magic, 6);
  if (std::string(magic, 6) != "\x93NUMPY") throw std::runtime_error(path + ": not a .npy file");
  uint8_t version[2];
  in.read(reinterpret_cast<char*>(version), 2);
  uint32_t header_len = 0;
  if (version[0] == 1) {
    uint16_t n;
    in.read(reinterpret_cast<char*>(&n), 2);
    header_len = n;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (header.find("'<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": expected little-endian float32 in C order");
  NpyArray a;
  const auto open = header.find('(', header.find("'shape'"));
  const auto close = header.find(')', open);
  std::string dims = header.substr(open + 1, close - open - 1);
  size_t pos = 0;
  while (pos < dims.size()) {
    while (pos < dims.size() && (dims[pos] == ' ' || dims[pos] == ',')) ++pos;
    if (pos >= dims.size()) break;
    size_t used = 0;
    a.shape.push_back(std::stoll(dims.substr(pos), &used));
    pos += used;
  }
  int64_t n = 1;
  for (int64_t d : a.shape) n *= d;
  a.data.resize(static_cast<size_t>(n));
  in.read(reinterpret_cast<char*>(a.data.data()), n * 4);
  if (!in) throw std::runtime_error(path + ": truncated data");
  return a;
}

// Largest |a - b| / max(1, |b|) (relative for large values, absolute near zero).
inline double max_rel_error(const float* a, const float* b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]) / std::max(1.0, std::abs(static_cast<double>(b[i])));
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace strata::test

namespace strata::test {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` through the shell with a wall-clock limit (coreutils timeout), capturing output.
inline CommandResult run_command(const std::string& command, int timeout_s = 300) {
  const std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " " + command + " 2>&1";
  CommandResult r;
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A TCP port that was free a moment ago (bound to port 0, then released).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

inline std::string strata_binary() { return env_or("STRATA_BINARY", "strata"); }
// strata with fault injection (tests/e2e/strata_fault_main.cpp), for the tests of rank failure.
inline std::string strata_fault_binary() { return env_or("STRATA_FAULT_BINARY", "strata_fault"); }
inline std::string mpirun(int np) { return "mpirun --oversubscribe -np " + std::to_string(np) + " "; }

// Normal(0, scale) f32 values, the same for the same seed.
inline Tensor random_f32(Shape shape, uint32_t seed, float scale = 1.f) {
  Tensor t = Tensor::empty(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// Token ids from a text file: whitespace-separated, lines starting with '#' skipped.
inline std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<int32_t> ids;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    int32_t id;
    while (s >> id) ids.push_back(id);
  }
  return ids;
}

// An IPv4 address of this machine other than loopback, or "" when there is none.
inline std::string non_loopback_ipv4() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string out;
  for (ifaddrs* a = list; a != nullptr && out.empty(); a = a->ifa_next)
    if (a->ifa_addr != nullptr && a->ifa_addr->sa_family == AF_INET && !(a->ifa_flags & IFF_LOOPBACK)) {
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
      out = buf;
    }
  freeifaddrs(list);
  return out;
}

}  // namespace strata::test
