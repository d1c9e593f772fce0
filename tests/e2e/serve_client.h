// tests/e2e/serve_client.h: what the server tests need to drive `strata serve` from outside: start it
// as a subprocess (single rank or under mpirun) on a free port, and a raw-socket HTTP/1.1 client
// (so malformed and truncated requests can be sent too) with chunked and SSE decoding.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace strata::test {

struct HttpResponse {
  int status = 0;  // 0: no response (connection failed or closed early)
  std::string headers;
  std::string body;
  std::string header(const std::string& name) const {
    std::string lower = headers;
    for (char& c : lower) c = static_cast<char>(std::tolower(c));
    std::string key = "\r\n";
    for (char c : name) key += static_cast<char>(std::tolower(c));
    key += ":";
    const auto p = lower.find(key);
    if (p == std::string::npos) return "";
    const auto b = headers.find_first_not_of(' ', p + key.size());
    return headers.substr(b, headers.find("\r\n", b) - b);
  }
  boost::json::value json() const {
    boost::system::error_code ec;
    auto v = boost::json::parse(body, ec);
    return ec ? boost::json::value() : v;
  }
  // The `data:` payloads of a server-sent event stream.
  std::vector<std::string> events() const {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < body.size()) {
      const auto end = body.find("\n\n", pos);
      const std::string ev = body.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      if (ev.rfind("data: ", 0) == 0) out.push_back(ev.substr(6));
      if (end == std::string::npos) break;
      pos = end + 2;
    }
    return out;
  }
};

inline int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{120, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

inline bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

inline std::string read_all(int fd) {
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

inline std::string dechunk(const std::string& body) {
  std::string out;
  size_t pos = 0;
  while (pos < body.size()) {
    const auto eol = body.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(body.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    out += body.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  return out;
}

inline HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return r;
  r.status = std::atoi(raw.c_str() + 9);
  r.headers = raw.substr(0, head_end + 2);
  r.body = raw.substr(head_end + 4);
  if (r.header("Transfer-Encoding") == "chunked") r.body = dechunk(r.body);
  return r;
}

// Sends raw bytes, reads until the server closes.
inline HttpResponse raw_exchange(int port, const std::string& bytes) {
  const int fd = connect_to(port);
  if (fd < 0) return {};
  send_all(fd, bytes);
  HttpResponse r = parse_response(read_all(fd));
  close(fd);
  return r;
}

inline std::string request_bytes(const std::string& method, const std::string& path, const std::string& body) {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline HttpResponse http(int port, const std::string& method, const std::string& path, const std::string& body = "") {
  return raw_exchange(port, request_bytes(method, path, body));
}

// A `strata serve` child process; its output goes to a log file.
class ServerProcess {
 public:
  // `command` is everything after the binary or mpirun prefix, e.g. "serve --model X".
  ServerProcess(const std::string& name, const std::string& prefix, const std::string& args) {
    log_ = temp_dir("serve") + "/" + name + ".log";
    std::remove(log_.c_str());  // a previous run's port must not be read
    const std::string cmd = "exec " + prefix + strata_binary() + " " + args + " --port 0 > " + log_ + " 2>&1";
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Waits for "listening on ...:PORT" in the log, then for /health to say 200.
  bool wait_ready(int timeout_s = 90) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (port_ == 0) {
        const std::string text = log();
        const auto p = text.find("listening on http://");
        if (p != std::string::npos) {
          const auto colon = text.find(':', p + 20);
          port_ = std::atoi(text.c_str() + colon + 1);
          const auto pid = text.find("(pid ", colon);
          if (pid != std::string::npos) server_pid_ = std::atoi(text.c_str() + pid + 5);
        }
      }
      if (port_ != 0 && http(port_, "GET", "/health").status == 200) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // The serving process itself (world rank 0 under mpirun), from its "listening" line.
  pid_t server_pid() const { return server_pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void signal(int sig) { kill(pid_, sig); }
  // Exit code, or -1 when it did not exit within the limit.
  int wait_exit(int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
  pid_t server_pid_ = -1;
  bool exited_ = false;
};

}  // namespace strata::test
