// Low-level ptrace operations on one thread that we have seized (PTRACE_SEIZE).
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "common/result.hpp"

namespace crkit::inject {

using Regs = user_regs_struct;

// How a waited-for thread stopped.
struct StopInfo {
  enum Kind { EventStop, SyscallStop, SignalStop, CloneEvent, Exited, Other } kind = Other;
  int signal = 0;  // stop signal (SignalStop: the signal being delivered)
  int status = 0;  // raw wait status
};

// Waits for tid (a tracee) to change state; retries on EINTR.
Result<StopInfo> wait_thread(pid_t tid);
// Like wait_thread, polling, while keep_going() says so; ETIMEDOUT when it stops saying so.
Result<StopInfo> wait_thread_while(pid_t tid, const std::function<bool()>& keep_going);

Result<Regs> get_regs(pid_t tid);
Status set_regs(pid_t tid, const Regs& r);
// NT_X86_XSTATE blob (FPU, SSE, AVX...); its length is the kernel's user xstate size.
Result<std::vector<uint8_t>> get_xstate(pid_t tid);
Status set_xstate(pid_t tid, const std::vector<uint8_t>& xstate);
// The XCR0 feature mask recorded by the kernel in an NT_X86_XSTATE blob (its sw_usable
// bytes), or 0 if the blob is too short to hold it.
uint64_t xstate_features(const std::vector<uint8_t>& xstate);
Result<uint64_t> get_sigmask(pid_t tid);
Status set_sigmask(pid_t tid, uint64_t mask);

// Pending signals (siginfo_t, 128 bytes each) of the thread, or of the whole process when
// shared is true.
Result<std::vector<std::vector<uint8_t>>> peek_pending(pid_t tid, bool shared);

struct RseqConfig {
  uint64_t addr = 0;
  uint32_t len = 0;
  uint32_t sig = 0;
};
Result<RseqConfig> get_rseq(pid_t tid);

// Syscall-restart values the kernel leaves in rax for an interrupted system call.
inline constexpr long kERestartSys = -512;
inline constexpr long kERestartNoIntr = -513;
inline constexpr long kERestartNoHand = -514;
inline constexpr long kERestartRestartBlock = -516;

// Registers a thread must resume with so that a system call it was interrupted in is
// re-issued (rip moved back onto the `syscall` instruction, rax = syscall number) and the
// kernel does not apply its own restart logic on top (orig_rax = -1).
Regs regs_for_resume(const Regs& saved);

}  // namespace crkit::inject
