// Remote system calls: make a stopped tracee execute one system call of our choosing.
//
// The thread's registers are saved, rip is pointed at an existing `syscall` instruction in
// the tracee (found in the vDSO or another executable mapping), the call runs between two
// PTRACE_SYSCALL stops, and the registers are put back. All signals are blocked in the
// thread for the duration so no handler can run inside our call.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <vector>

#include "common/result.hpp"
#include "inject/ptrace_thread.hpp"

namespace crkit::inject {

// Address of a `syscall` (0f 05) instruction in pid's address space, searched in [vdso]
// first, then in other executable mappings.
Result<uint64_t> find_syscall_site(pid_t pid);

class RemoteCaller {
 public:
  RemoteCaller(pid_t tid, uint64_t site) : tid_(tid), site_(site) {}

  // Runs syscall nr with up to six arguments in the thread; returns the raw result (negative
  // errno values are returned as is, use check() to turn them into errors).
  Result<long> call(long nr, std::array<uint64_t, 6> args = {});
  // Like call(), but a negative result becomes an error naming `what`.
  Result<long> check(const std::string& what, long nr, std::array<uint64_t, 6> args = {});

  // call() in two halves, so that calls in several processes run at the same time: start()
  // returns once the thread has entered the system call and runs it; finish() waits for its
  // result and puts the registers back. Nothing else may be done with the thread in between.
  Status start(long nr, std::array<uint64_t, 6> args = {});
  Result<long> finish();

  // Threads created by the call (clone/clone3 with ptrace auto-attach).
  const std::vector<pid_t>& new_threads() const { return new_threads_; }
  void clear_new_threads() { new_threads_.clear(); }

  void set_site(uint64_t site) { site_ = site; }
  uint64_t site() const { return site_; }
  pid_t tid() const { return tid_; }

 private:
  Result<StopInfo> resume_until_syscall_stop();
  Result<StopInfo> wait_syscall_stop();
  void restore();
  pid_t tid_;
  uint64_t site_;
  std::vector<pid_t> new_threads_;
  Regs saved_{};  // the thread's own registers and signal mask, during a call
  uint64_t saved_mask_ = 0;
};

}  // namespace crkit::inject
