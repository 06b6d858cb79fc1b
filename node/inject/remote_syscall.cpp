#include "inject/remote_syscall.hpp"

#include <signal.h>
#include <sys/ptrace.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "inject/remote_memory.hpp"
#include "proc/proc.hpp"

namespace crkit::inject {

Result<uint64_t> find_syscall_site(pid_t pid) {
  CRKIT_ASSIGN(auto maps, proc::read_maps(pid));
  // The vDSO first: it always has syscall fallbacks and is never file-backed.
  std::stable_partition(maps.begin(), maps.end(),
                        [](const proc::MapEntry& m) { return m.path == "[vdso]"; });
  for (const auto& m : maps) {
    if (!m.exec || !m.read || m.path == "[vsyscall]") continue;
    uint64_t len = std::min<uint64_t>(m.end - m.start, 1 << 20);
    std::vector<uint8_t> buf(len);
    if (!read_memory(pid, m.start, buf)) continue;
    for (size_t i = 0; i + 1 < buf.size(); ++i)
      if (buf[i] == 0x0f && buf[i + 1] == 0x05) return m.start + i;
  }
  return fail(
      ENOEXEC,
      fmt::format("no syscall instruction found in the executable mappings of process {}", pid));
}

Result<StopInfo> RemoteCaller::resume_until_syscall_stop() {
  if (::ptrace(PTRACE_SYSCALL, tid_, 0, 0) < 0)
    return fail_errno(fmt::format("resuming thread {} for a remote system call", tid_));
  return wait_syscall_stop();
}

// Waits for the thread's next syscall stop, resuming it past the stops on the way.
Result<StopInfo> RemoteCaller::wait_syscall_stop() {
  for (bool first = true;; first = false) {
    if (!first && ::ptrace(PTRACE_SYSCALL, tid_, 0, 0) < 0)
      return fail_errno(fmt::format("resuming thread {} for a remote system call", tid_));
    CRKIT_ASSIGN(StopInfo s, wait_thread(tid_));
    switch (s.kind) {
      case StopInfo::SyscallStop:
        return s;
      case StopInfo::CloneEvent: {
        unsigned long child = 0;
        if (::ptrace(PTRACE_GETEVENTMSG, tid_, 0, &child) == 0)
          new_threads_.push_back(static_cast<pid_t>(child));
        continue;
      }
      case StopInfo::Exited:
        return fail(ESRCH, fmt::format("thread {} exited during a remote system call", tid_));
      case StopInfo::EventStop:
        continue;  // a pending PTRACE_INTERRUPT or group-stop: keep going
      case StopInfo::SignalStop:
        if (s.signal == SIGKILL) return fail(ESRCH, fmt::format("thread {} was killed", tid_));
        continue;  // signals are blocked; only SIGSTOP-like stops get here: suppress
      default:
        return fail(
            EIO,
            fmt::format("thread {} stopped unexpectedly (status {:#x}) in a remote system call",
                        tid_, s.status));
    }
  }
}

void RemoteCaller::restore() {
  (void)set_regs(tid_, saved_);
  (void)set_sigmask(tid_, saved_mask_);
}

Status RemoteCaller::start(long nr, std::array<uint64_t, 6> args) {
  CRKIT_ASSIGN(saved_, get_regs(tid_));
  CRKIT_ASSIGN(saved_mask_, get_sigmask(tid_));
  CRKIT_TRY(set_sigmask(tid_, ~0ull));
  Regs r = saved_;
  r.rax = static_cast<unsigned long long>(nr);
  r.orig_rax = static_cast<unsigned long long>(-1);
  r.rdi = args[0];
  r.rsi = args[1];
  r.rdx = args[2];
  r.r10 = args[3];
  r.r8 = args[4];
  r.r9 = args[5];
  r.rip = site_;
  if (Status s = set_regs(tid_, r); !s) {
    restore();
    return fail(s.error());
  }
  // The entry stop; then the call runs until the exit stop, which finish() waits for.
  auto entered = resume_until_syscall_stop();
  if (entered && ::ptrace(PTRACE_SYSCALL, tid_, 0, 0) == 0) return {};
  Error e = entered ? errno_error(fmt::format("resuming thread {} for a remote system call", tid_))
                    : entered.error();
  restore();
  return fail(e);
}

Result<long> RemoteCaller::finish() {
  auto st = wait_syscall_stop();
  if (!st) {
    restore();
    return fail(st.error());
  }
  auto after = get_regs(tid_);
  restore();
  if (!after) return fail(after.error());
  return static_cast<long>(after->rax);
}

Result<long> RemoteCaller::call(long nr, std::array<uint64_t, 6> args) {
  CRKIT_TRY(start(nr, args));
  return finish();
}

Result<long> RemoteCaller::check(const std::string& what, long nr, std::array<uint64_t, 6> args) {
  CRKIT_ASSIGN(long r, call(nr, args));
  if (r < 0 && r > -4096)
    return fail_sys(static_cast<int>(-r), fmt::format("{} (in process thread {})", what, tid_));
  return r;
}

}  // namespace crkit::inject
