#include "inject/cow_copy.hpp"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <chrono>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "common/log.hpp"
#include "inject/ptrace_thread.hpp"
#include "inject/remote_syscall.hpp"

namespace crkit::inject {

Result<CowCopy> CowCopy::fork_from(const FrozenProcess& p) {
  return std::move(fork_all({&p}).front());
}

std::vector<Result<CowCopy>> CowCopy::fork_all(const std::vector<const FrozenProcess*>& ps) {
  // The child is traced from birth (and killed if we die) only with these options set on the
  // thread that forks it.
  const long opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL;
  std::vector<std::optional<RemoteCaller>> callers(ps.size());
  std::vector<Status> started_ok;
  for (size_t i = 0; i < ps.size(); ++i) {
    const pid_t pid = ps[i]->pid();
    auto started = [&]() -> Status {
      CRKIT_ASSIGN(uint64_t site, find_syscall_site(pid));
      if (::ptrace(PTRACE_SETOPTIONS, pid, 0, opts) < 0)
        return fail_errno(fmt::format("preparing process {} for a copy-on-write snapshot", pid));
      callers[i].emplace(pid, site);
      // clone(flags = 0): a fork whose exit signal is none (see the header).
      if (Status s = callers[i]->start(SYS_clone, {0, 0, 0, 0, 0, 0}); !s) {
        callers[i].reset();
        ::ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD);
        return fail(s.error().context(fmt::format("forking a snapshot of process {}", pid)));
      }
      return {};
    }();
    started_ok.push_back(std::move(started));
  }
  // Every fork runs now; collect them in turn.
  std::vector<Result<CowCopy>> out;
  out.reserve(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    if (!callers[i]) {
      out.emplace_back(fail(started_ok[i].error()));
      continue;
    }
    const pid_t pid = ps[i]->pid();
    auto r = callers[i]->finish();
    ::ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD);
    out.emplace_back([&]() -> Result<CowCopy> {
      // A copy that was attached is ours to kill, whatever else went wrong.
      std::optional<CowCopy> attached;
      if (!callers[i]->new_threads().empty())
        attached.emplace(CowCopy(callers[i]->new_threads().front(), pid));
      if (!r) return fail(r.error().context(fmt::format("forking a snapshot of process {}", pid)));
      if (*r < 0)
        return fail_sys(static_cast<int>(-*r),
                        fmt::format("forking a copy-on-write snapshot of process {} (in the "
                                    "process)",
                                    pid));
      // The event gives its PID as we see it (the process may live in another PID namespace).
      if (!attached)
        return fail(EIO, fmt::format("the snapshot of process {} was not attached", pid));
      const pid_t child = attached->pid();
      CowCopy copy = std::move(*attached);
      // Its first stop (it has not run yet).
      for (;;) {
        auto s = wait_thread(child);
        if (!s)
          return fail(s.error().context(fmt::format("snapshot {} of process {}", child, pid)));
        if (s->kind == StopInfo::Exited)
          return fail(ESRCH, fmt::format("the snapshot {} of process {} died at once", child, pid));
        if (s->kind == StopInfo::EventStop || s->kind == StopInfo::SignalStop) break;
      }
      return copy;
    }());
  }
  return out;
}

double CowCopy::discard() {
  if (pid_ <= 0) return 0;
  const pid_t child = pid_;
  pid_ = 0;
  ::kill(child, SIGKILL);
  // As its tracer we see it die first; afterwards it is a zombie for its parent.
  int status = 0;
  while (::waitpid(child, &status, __WALL) < 0 && errno == EINTR) {
  }
  auto t0 = std::chrono::steady_clock::now();
  auto frozen = FrozenProcess::freeze(parent_);
  if (!frozen) {
    if (frozen.error().code != ESRCH)  // (an exited parent's children are reaped by init)
      log::warn(
          "cannot reap the snapshot {} of process {}: {}; it stays a zombie until the "
          "process exits",
          child, parent_, frozen.error().message);
    return 0;
  }
  auto site = find_syscall_site(parent_);
  if (site) {
    RemoteCaller caller(parent_, *site);
    for (int i = 0; i < 100; ++i) {
      auto r = caller.call(SYS_wait4, {static_cast<uint64_t>(child), 0, __WALL | WNOHANG, 0});
      if (!r || *r != 0) break;  // reaped, ECHILD (the process reaped it itself) or an error
      ::usleep(1000);
    }
  }
  frozen->release();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace crkit::inject
