// A copy-on-write snapshot of a frozen process, so that its memory can be saved while the
// process itself already runs again (cr_checkpoint --cow).
//
// The copy is forked from inside the process: an injected clone() with no exit signal, which
// ptrace attaches to us and stops before it runs a single instruction. The kernel shares the
// pages between the two and copies a page only when one of them writes it, so the copy keeps
// the memory exactly as it was at the fork. Not covered, and therefore to be saved before the
// process is released: MAP_SHARED memory (shared, not copied), MADV_DONTFORK regions (absent
// in the copy) and MADV_WIPEONFORK regions (zero in the copy).
//
// No exit signal means the process gets no SIGCHLD for the copy and wait() without __WALL or
// __WCLONE does not see it; discard() kills the copy and then makes the process reap it (an
// injected wait4 during a second, short freeze), so nothing is left behind.
#pragma once

#include <sys/types.h>

#include <vector>

#include "common/result.hpp"
#include "inject/freezer.hpp"

namespace crkit::inject {

class CowCopy {
 public:
  // p must be frozen (every thread stopped).
  static Result<CowCopy> fork_from(const FrozenProcess& p);
  // One copy of each process, forked at the same time: a fork copies the process's page
  // tables, which for a large process takes milliseconds, all of them frozen time; the kernel
  // does them in parallel. Element i is process i's copy or why it has none.
  static std::vector<Result<CowCopy>> fork_all(const std::vector<const FrozenProcess*>& ps);

  CowCopy(CowCopy&& o) noexcept : pid_(o.pid_), parent_(o.parent_) { o.pid_ = 0; }
  CowCopy& operator=(CowCopy&&) = delete;
  CowCopy(const CowCopy&) = delete;
  ~CowCopy() { discard(); }

  pid_t pid() const { return pid_; }
  pid_t parent() const { return parent_; }
  // Kills the copy and has its parent reap it. Returns how long the parent was frozen for it
  // (seconds; 0 when the parent had exited or reaped it itself).
  double discard();

 private:
  CowCopy(pid_t pid, pid_t parent) : pid_(pid), parent_(parent) {}
  pid_t pid_ = 0;
  pid_t parent_ = 0;
};

}  // namespace crkit::inject
