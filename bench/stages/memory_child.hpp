// Shared by the stage benchmarks: a child process holding memory to be read, and the data
// patterns it is filled with.
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace crkit::bench {

[[noreturn]] inline void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

// xorshift64: incompressible data, the same for every run.
inline void fill_random(uint8_t* p, size_t n) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
}

// A child holding `bytes` of private anonymous memory filled by fill, blocked until the
// benchmark ends; killed and reaped by the destructor. Fork it before any benchmark thread.
class MemoryChild {
 public:
  MemoryChild(size_t bytes, void (*fill)(uint8_t*, size_t)) {
    int p[2];
    if (::pipe(p) != 0) die("pipe");
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the benchmark
      if (::getppid() != parent) ::_exit(1);
      void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) ::_exit(1);
      fill(static_cast<uint8_t*>(m), bytes);
      const uint64_t addr = reinterpret_cast<uint64_t>(m);
      if (::write(p[1], &addr, sizeof addr) != sizeof addr) ::_exit(1);
      for (;;) ::pause();
    }
    ::close(p[1]);
    if (::read(p[0], &addr_, sizeof addr_) != sizeof addr_) die("starting the child");
    ::close(p[0]);
  }
  ~MemoryChild() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  MemoryChild(const MemoryChild&) = delete;
  MemoryChild& operator=(const MemoryChild&) = delete;

  pid_t pid() const { return pid_; }
  uint64_t addr() const { return addr_; }

 private:
  pid_t pid_ = -1;
  uint64_t addr_ = 0;
};

}  // namespace crkit::bench
