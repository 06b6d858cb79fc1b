#include "inject/ptrace_thread.hpp"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace crkit::inject {

namespace {
StopInfo decode_status(int status);
}  // namespace

Result<StopInfo> wait_thread(pid_t tid) {
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(tid, &status, __WALL);
    if (r == tid) break;
    if (r < 0 && errno == EINTR) continue;
    return fail_errno(fmt::format("waiting for thread {}", tid));
  }
  return decode_status(status);
}

Result<StopInfo> wait_thread_while(pid_t tid, const std::function<bool()>& keep_going) {
  if (!keep_going) return wait_thread(tid);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid, &status, __WALL | WNOHANG);
    if (r == tid) return decode_status(status);
    if (r < 0 && errno != EINTR) return fail_errno(fmt::format("waiting for thread {}", tid));
    if (!keep_going())
      return fail(ETIMEDOUT, fmt::format("thread {} did not stop in time (it may be in an "
                                         "uninterruptible wait, e.g. vfork)",
                                         tid));
    ::usleep(1000);
  }
}

namespace {
StopInfo decode_status(int status) {
  StopInfo s;
  s.status = status;
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    s.kind = StopInfo::Exited;
    return s;
  }
  if (!WIFSTOPPED(status)) return s;
  int sig = WSTOPSIG(status);
  int event = status >> 16;
  s.signal = sig;
  if (sig == (SIGTRAP | 0x80)) {
    s.kind = StopInfo::SyscallStop;
  } else if (event == PTRACE_EVENT_STOP) {
    s.kind = StopInfo::EventStop;
  } else if (event == PTRACE_EVENT_CLONE) {
    s.kind = StopInfo::CloneEvent;
  } else if (event == 0) {
    s.kind = StopInfo::SignalStop;
  }
  return s;
}
}  // namespace

Result<Regs> get_regs(pid_t tid) {
  Regs r{};
  iovec iov{&r, sizeof(r)};
  if (::ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) < 0)
    return fail_errno(fmt::format("reading registers of thread {}", tid));
  return r;
}

Status set_regs(pid_t tid, const Regs& r) {
  Regs copy = r;
  iovec iov{&copy, sizeof(copy)};
  if (::ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) < 0)
    return fail_errno(fmt::format("setting registers of thread {}", tid));
  return {};
}

Result<std::vector<uint8_t>> get_xstate(pid_t tid) {
  std::vector<uint8_t> buf(64 * 1024);
  iovec iov{buf.data(), buf.size()};
  if (::ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov) < 0)
    return fail_errno(fmt::format("reading FPU/XSAVE state of thread {}", tid));
  buf.resize(iov.iov_len);
  return buf;
}

Status set_xstate(pid_t tid, const std::vector<uint8_t>& xstate) {
  std::vector<uint8_t> copy = xstate;
  iovec iov{copy.data(), copy.size()};
  if (::ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov) < 0)
    return fail_errno(fmt::format("restoring FPU/XSAVE state of thread {}", tid));
  return {};
}

uint64_t xstate_features(const std::vector<uint8_t>& xstate) {
  // For ptrace the kernel stores XCR0 in the first word of the FXSAVE area's software-usable
  // bytes (offset 464, USER_XSTATE_XCR0_WORD in asm/user.h).
  constexpr size_t kOffset = 464;
  if (xstate.size() < kOffset + 8) return 0;
  uint64_t v = 0;
  std::memcpy(&v, xstate.data() + kOffset, sizeof(v));
  return v;
}

Result<uint64_t> get_sigmask(pid_t tid) {
  uint64_t m = 0;
  if (::ptrace(PTRACE_GETSIGMASK, tid, sizeof(m), &m) < 0)
    return fail_errno(fmt::format("reading blocked signals of thread {}", tid));
  return m;
}

Status set_sigmask(pid_t tid, uint64_t mask) {
  if (::ptrace(PTRACE_SETSIGMASK, tid, sizeof(mask), &mask) < 0)
    return fail_errno(fmt::format("setting blocked signals of thread {}", tid));
  return {};
}

Result<std::vector<std::vector<uint8_t>>> peek_pending(pid_t tid, bool shared) {
  std::vector<std::vector<uint8_t>> out;
  for (uint64_t off = 0;; ++off) {
    __ptrace_peeksiginfo_args args{};
    args.off = off;
    args.flags = shared ? PTRACE_PEEKSIGINFO_SHARED : 0;
    args.nr = 1;
    std::vector<uint8_t> info(128);
    long n = ::ptrace(PTRACE_PEEKSIGINFO, tid, &args, info.data());
    if (n < 0) return fail_errno(fmt::format("reading pending signals of thread {}", tid));
    if (n == 0) break;
    out.push_back(std::move(info));
  }
  return out;
}

Result<RseqConfig> get_rseq(pid_t tid) {
  __ptrace_rseq_configuration c{};
  if (::ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid, sizeof(c), &c) <
      0)
    return fail_errno(fmt::format("reading rseq registration of thread {}", tid));
  return RseqConfig{c.rseq_abi_pointer, c.rseq_abi_size, c.signature};
}

Regs regs_for_resume(const Regs& saved) {
  Regs r = saved;
  long rax = static_cast<long>(r.rax);
  if (static_cast<long>(r.orig_rax) >= 0) {
    switch (rax) {
      case kERestartSys:
      case kERestartNoIntr:
      case kERestartNoHand:
      case kERestartRestartBlock:
        // Re-issue the interrupted call with its original arguments (for the
        // restart-block kind the kernel's saved restart state did not survive).
        r.rax = r.orig_rax;
        r.rip -= 2;
        break;
      default:
        break;
    }
  }
  r.orig_rax = static_cast<unsigned long long>(-1);
  return r;
}

}  // namespace crkit::inject
