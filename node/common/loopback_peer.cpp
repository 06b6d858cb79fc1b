#include "common/loopback_peer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace crkit {

namespace {

// "0100007F:1F90" (the address as the kernel prints the __be32, the port in host order).
bool parse_endpoint(const std::string& s, uint32_t* addr, unsigned* port) {
  return std::sscanf(s.c_str(), "%8X:%4X", addr, port) == 2;
}

}  // namespace

Result<uid_t> loopback_peer_uid(int fd) {
  sockaddr_in self{}, peer{};
  socklen_t len = sizeof self;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) != 0)
    return fail_errno("getsockname");
  len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0)
    return fail_errno("getpeername");
  if (self.sin_family != AF_INET || peer.sin_family != AF_INET)
    return fail(EAFNOSUPPORT, "not an IPv4 connection");
  std::ifstream in("/proc/net/tcp");
  if (!in) return fail_errno("opening /proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state, queues, timer, retr;
    uid_t uid = 0;
    unsigned timeout = 0;
    unsigned long inode = 0;
    if (!(f >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode))
      continue;
    // Only a live socket has its owner's uid here: one its owner closed already (FIN_WAIT,
    // TIME_WAIT) shows uid 0 and inode 0, which must not pass for root.
    if (state != "01" || inode == 0) continue;
    uint32_t la = 0, ra = 0;
    unsigned lp = 0, rp = 0;
    if (!parse_endpoint(local, &la, &lp) || !parse_endpoint(remote, &ra, &rp)) continue;
    // The peer's socket: its local end is our peer, its remote end is us.
    if (la == peer.sin_addr.s_addr && lp == ntohs(peer.sin_port) && ra == self.sin_addr.s_addr &&
        rp == ntohs(self.sin_port))
      return uid;
  }
  char ip[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  return fail(ENOENT, fmt::format("{}:{} is not a socket of this host's network namespace", ip,
                                  ntohs(peer.sin_port)));
}

Status check_loopback_peer(int fd, const char* what) {
  auto uid = loopback_peer_uid(fd);
  if (!uid) return fail(uid.error().code, fmt::format("{}: {}", what, uid.error().message));
  if (*uid != ::geteuid() && *uid != 0)
    return fail(EACCES, fmt::format("{}: refused a connection from uid {} (only uid {} may "
                                    "connect)",
                                    what, *uid, ::geteuid()));
  return {};
}

}  // namespace crkit
