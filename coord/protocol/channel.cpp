#include "protocol/channel.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>

namespace crkit::coord {

std::string Endpoint::str() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

Result<Endpoint> parse_endpoint(std::string_view s) {
  Endpoint ep;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return fail(EINVAL, fmt::format("'{}' is not HOST:PORT", s));
    ep.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      return fail(EINVAL, fmt::format("'{}' is not HOST:PORT", s));
    ep.host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  unsigned long v = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return fail(EINVAL, fmt::format("'{}': bad port '{}'", s, port));
    v = v * 10 + static_cast<unsigned long>(c - '0');
    if (v > 65535) return fail(EINVAL, fmt::format("'{}': port {} out of range", s, port));
  }
  if (port.empty() || v == 0) return fail(EINVAL, fmt::format("'{}': bad port '{}'", s, port));
  ep.port = static_cast<uint16_t>(v);
  return ep;
}

Result<UniqueFd> listen_tcp(const std::string& host, uint16_t port) {
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  struct addrinfo* res = nullptr;
  const char* node = host.empty() || host == "*" ? nullptr : host.c_str();
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(node, service.c_str(), &hints, &res); rc != 0)
    return fail(EINVAL, fmt::format("resolving '{}': {}", host, ::gai_strerror(rc)));
  int err = EADDRNOTAVAIL;
  for (auto* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0));
    if (!fd) {
      err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), 128) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    err = errno;
  }
  ::freeaddrinfo(res);
  return fail_sys(err, fmt::format("listening on {}:{}", host.empty() ? "*" : host, port));
}

uint16_t local_port(int fd) {
  struct sockaddr_storage ss {};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

Result<UniqueFd> connect_tcp(const Endpoint& ep, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  for (;;) {
    struct addrinfo* res = nullptr;
    const std::string service = std::to_string(ep.port);
    int rc = ::getaddrinfo(ep.host.c_str(), service.c_str(), &hints, &res);
    if (rc != 0)
      return fail(EHOSTUNREACH, fmt::format("resolving '{}': {}", ep.host, ::gai_strerror(rc)));
    int err = ECONNREFUSED;
    for (auto* ai = res; ai; ai = ai->ai_next) {
      UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0));
      if (!fd) {
        err = errno;
        continue;
      }
      if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) {
        ::freeaddrinfo(res);
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
      }
      err = errno;
    }
    ::freeaddrinfo(res);
    const bool retry = err == ECONNREFUSED || err == ENETUNREACH || err == EAGAIN;
    if (!retry || std::chrono::steady_clock::now() >= deadline)
      return fail_sys(err, fmt::format("connecting to {}", ep.str()));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Channel::Channel(UniqueFd fd, std::string peer) : fd_(std::move(fd)), peer_(std::move(peer)) {
  int fl = ::fcntl(fd_.get(), F_GETFL);
  ::fcntl(fd_.get(), F_SETFL, fl | O_NONBLOCK);
}

Status Channel::send(const Json& msg) {
  if (!fd_) return fail(ENOTCONN, fmt::format("sending to {}: not connected", peer_));
  std::string line = msg.dump();
  line.push_back('\n');
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p {
        fd_.get(), POLLOUT, 0
      };
      if (::poll(&p, 1, 10000) <= 0)
        return fail(ETIMEDOUT, fmt::format("sending to {}: the peer does not read", peer_));
      continue;
    }
    return fail_errno(fmt::format("sending to {}", peer_));
  }
  return {};
}

bool Channel::fill() {
  if (!fd_ || eof_) return false;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    eof_ = true;  // 0: closed by the peer; < 0: reset
    return false;
  }
}

Result<std::optional<Json>> Channel::next() {
  auto nl = in_.find('\n');
  if (nl == std::string::npos) return std::optional<Json>{};
  std::string line = in_.substr(0, nl);
  in_.erase(0, nl + 1);
  Json j = Json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    // (Its text is not shown: it may hold the token.)
    return fail(EPROTO, fmt::format("{} sent a line that is not a JSON object ({} bytes)", peer_,
                                    line.size()));
  return std::optional<Json>{std::move(j)};
}

std::string loggable(const Json& m, size_t max) {
  Json copy = m;
  if (copy.is_object() && copy.contains("token")) copy["token"] = "(hidden)";
  return copy.dump().substr(0, max);
}

Result<Json> Channel::recv(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    CRKIT_ASSIGN(auto m, next());
    if (m) return std::move(*m);
    if (eof_ || !fd_) return fail(ECONNRESET, fmt::format("{} closed the connection", peer_));
    int wait = -1;
    if (timeout_ms >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return fail(ETIMEDOUT, fmt::format("no answer from {}", peer_));
      wait = static_cast<int>(left);
    }
    struct pollfd p {
      fd_.get(), POLLIN, 0
    };
    int r = ::poll(&p, 1, wait);
    if (r < 0 && errno != EINTR) return fail_errno(fmt::format("waiting for {}", peer_));
    if (r > 0) fill();
  }
}

Result<Json> call(const Endpoint& ep, const Json& request, int timeout_ms) {
  CRKIT_ASSIGN(UniqueFd fd, connect_tcp(ep, std::min(timeout_ms < 0 ? 5000 : timeout_ms, 5000)));
  Channel ch(std::move(fd), "the coordinator at " + ep.str());
  CRKIT_TRY(ch.send(request));
  return ch.recv(timeout_ms);
}

}  // namespace crkit::coord
