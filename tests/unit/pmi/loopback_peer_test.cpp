// common/loopback_peer: the owner of a loopback connection's far end, from the kernel's socket
// table; the PMI server and the agent's stdio port refuse connections of other users.
#include "common/loopback_peer.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/unique_fd.hpp"

namespace {

using crkit::UniqueFd;

// A listening socket on 127.0.0.1 (any port) and its address.
struct Listener {
  UniqueFd fd;
  sockaddr_in addr{};
  Listener() {
    fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd.get(), 4), 0);
    EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  }
  UniqueFd connect_to() const {
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(c.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    return c;
  }
};

TEST(LoopbackPeer, OurOwnConnectionIsOurs) {
  Listener l;
  UniqueFd client = l.connect_to();
  UniqueFd server(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server.valid());
  auto uid = crkit::loopback_peer_uid(server.get());
  ASSERT_TRUE(uid) << uid.error().message;
  EXPECT_EQ(*uid, ::geteuid());
  EXPECT_TRUE(crkit::check_loopback_peer(server.get(), "test port"));
}

TEST(LoopbackPeer, AnotherUsersConnectionIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  Listener l;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setresuid(65534, 65534, 65534) != 0) ::_exit(3);
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(c.get(), reinterpret_cast<const sockaddr*>(&l.addr), sizeof l.addr) != 0)
      ::_exit(4);
    char b = 0;
    (void)!::write(ready[1], &b, 1);
    ::pause();  // keep the connection until killed
    ::_exit(0);
  }
  ::close(ready[1]);
  char b;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);
  ::close(ready[0]);
  UniqueFd server(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server.valid());
  auto uid = crkit::loopback_peer_uid(server.get());
  ASSERT_TRUE(uid) << uid.error().message;
  EXPECT_EQ(*uid, 65534u);
  auto st = crkit::check_loopback_peer(server.get(), "test port");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EACCES);
  EXPECT_NE(st.error().message.find("uid 65534"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("test port"), std::string::npos) << st.error().message;
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST(LoopbackPeer, NotASocketIsAnError) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  EXPECT_FALSE(crkit::loopback_peer_uid(p[0]));
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace
