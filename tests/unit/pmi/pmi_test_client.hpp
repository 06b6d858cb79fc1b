// A blocking PMI-1 client for tests, speaking the wire format the way MPICH's simple_pmi.c
// does (one request line, one reply line; replies parsed like PMIU_parse_keyvals). It is kept
// independent of the server's own parser so the tests check the bytes on the wire.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "common/unique_fd.hpp"

namespace crkit::pmi::testing {

using Reply = std::map<std::string, std::string>;

// Splits "k=v k=v" at blanks and each token at its first '=' (PMIU_parse_keyvals).
inline Reply parse_reply(std::string_view line) {
  Reply out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t end = line.find(' ', i);
    if (end == std::string_view::npos) end = line.size();
    std::string_view tok = line.substr(i, end - i);
    i = end;
    if (tok.empty()) continue;
    size_t eq = tok.find('=');
    if (eq == std::string_view::npos) {
      ADD_FAILURE() << "reply token without '=': " << tok;
      continue;
    }
    out.try_emplace(std::string(tok.substr(0, eq)), std::string(tok.substr(eq + 1)));
  }
  return out;
}

class TestClient {
 public:
  // Connects to 127.0.0.1:port; a failure is reported to gtest and leaves connected() false.
  explicit TestClient(uint16_t port) {
    fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_) {
      ADD_FAILURE() << "socket: " << std::strerror(errno);
      return;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ADD_FAILURE() << "connect to port " << port << ": " << std::strerror(errno);
      fd_.reset();
    }
  }

  bool connected() const { return fd_.valid(); }
  void close() { fd_.reset(); }

  void send(std::string_view line) {
    std::string data(line);
    data += '\n';
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ADD_FAILURE() << "send '" << line << "': " << std::strerror(errno);
        return;
      }
      off += static_cast<size_t>(n);
    }
  }

  // The next reply line without '\n'; nullopt on timeout or end of stream.
  std::optional<std::string> read_line(int timeout_ms = 5000) {
    for (;;) {
      if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd_.get(), POLLIN, 0};
      int r = ::poll(&p, 1, timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      char tmp[4096];
      ssize_t n = ::recv(fd_.get(), tmp, sizeof tmp, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  // Reads one reply; an empty map (and a test failure) when none arrives in time.
  Reply read_reply(int timeout_ms = 5000) {
    auto line = read_line(timeout_ms);
    if (!line) {
      ADD_FAILURE() << "no reply within " << timeout_ms << " ms";
      return {};
    }
    return parse_reply(*line);
  }

  Reply request(std::string_view line) {
    send(line);
    return read_reply();
  }

  // True when the server closes the connection within the timeout (pending lines are read).
  bool wait_closed(int timeout_ms = 5000) {
    while (read_line(timeout_ms)) {
    }
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    char c;
    return ::recv(fd_.get(), &c, 1, MSG_DONTWAIT) == 0;
  }

  // PMI_Init in PMI_PORT mode as MPICH 4.0.2 performs it: initack first (getPMIFD), then init
  // and get_maxes (PMII_getmaxes). Returns the "set" values it received.
  Reply handshake(int pmi_id) {
    Reply got;
    send("cmd=initack pmiid=" + std::to_string(pmi_id));
    Reply ack = read_reply();
    EXPECT_EQ(ack["cmd"], "initack");
    for (int i = 0; i < 3; ++i) {
      Reply set = read_reply();
      EXPECT_EQ(set["cmd"], "set");
      for (auto& [k, v] : set) {
        if (k != "cmd") got[k] = v;
      }
    }
    Reply init = request("cmd=init pmi_version=1 pmi_subversion=1");
    EXPECT_EQ(init["cmd"], "response_to_init");
    EXPECT_EQ(init["rc"], "0");
    Reply maxes = request("cmd=get_maxes");
    EXPECT_EQ(maxes["cmd"], "maxes");
    return got;
  }

 private:
  UniqueFd fd_;
  std::string buf_;
};

}  // namespace crkit::pmi::testing
