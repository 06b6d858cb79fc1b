#include "inject/freezer.hpp"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "inject/ptrace_thread.hpp"
#include "inject/remote_memory.hpp"
#include "inject/remote_syscall.hpp"
#include "proc/proc.hpp"

namespace crkit::inject {

FrozenProcess::FrozenProcess(FrozenProcess&& o) noexcept
    : pid_(o.pid_),
      tids_(std::move(o.tids_)),
      was_stopped_(o.was_stopped_),
      attached_(std::exchange(o.attached_, false)),
      frozen_(o.frozen_),
      stashed_(std::move(o.stashed_)) {}

FrozenProcess::~FrozenProcess() {
  release();
}

Result<FrozenProcess> FrozenProcess::freeze(pid_t pid, const std::function<bool()>& keep_going) {
  if (pid <= 0) return fail(ESRCH, fmt::format("invalid process id {}", pid));
  if (::kill(pid, 0) < 0 && errno == ESRCH)
    return fail(ESRCH, fmt::format("process {} does not exist", pid));
  auto st = proc::read_status(pid);
  if (!st) return fail(st.error());
  if (st->tgid != pid)
    return fail(ESRCH, fmt::format("{} is a thread of process {}, not a process", pid, st->tgid));
  if ((st->state == 'Z' || st->state == 'X') && st->threads > 1)
    return fail(ENOTSUP, fmt::format("the main thread of process {} has exited while {} other "
                                     "threads run; such a process cannot be checkpointed",
                                     pid, st->threads - 1));
  if (st->state == 'Z' || st->state == 'X')
    return fail(ESRCH, fmt::format("process {} is a zombie (already exited)", pid));
  if (st->tracer_pid != 0)
    return fail(kCrEPtraced,
                fmt::format("process {} is being traced by process {}", pid, st->tracer_pid));

  FrozenProcess fp;
  fp.pid_ = pid;
  fp.was_stopped_ = (st->state == 'T');
  fp.attached_ = true;
  std::set<pid_t> seized;
  std::vector<pid_t> alive;
  // Threads may be created while we seize, even by a thread caught inside clone() after we
  // listed: list, seize, wait for the stops, then list again until a pass finds no new
  // thread. A stopped thread cannot create threads, so this ends.
  for (;;) {
    std::vector<pid_t> fresh;
    for (;;) {
      CRKIT_ASSIGN(auto tids, proc::list_threads(pid));
      bool added = false;
      for (pid_t t : tids) {
        if (seized.count(t)) continue;
        if (::ptrace(PTRACE_SEIZE, t, 0, PTRACE_O_TRACESYSGOOD) < 0) {
          int e = errno;
          if (e == ESRCH) continue;  // thread exited meanwhile
          // Someone else attached between our look at TracerPid and here (another
          // checkpoint of the same process): that is an overlapping request.
          if (auto again = proc::read_task_status(pid, t); e == EPERM && again && again->tracer_pid)
            return fail(EBUSY, fmt::format("process {} is being checkpointed or traced by process "
                                           "{} already",
                                           pid, again->tracer_pid));
          if (e == EPERM)
            return fail(EPERM,
                        fmt::format("cannot checkpoint process {}: ptrace attach to thread {} was "
                                    "refused: Operation not permitted (the process belongs to "
                                    "another user or is not traceable)",
                                    pid, t));
          return fail_sys(e, fmt::format("attaching to thread {} of process {}", t, pid));
        }
        seized.insert(t);
        fp.tids_.push_back(t);
        fresh.push_back(t);
        if (::ptrace(PTRACE_INTERRUPT, t, 0, 0) < 0 && errno != ESRCH)
          return fail_errno(fmt::format("interrupting thread {}", t));
        added = true;
      }
      if (!added) break;
    }
    if (fresh.empty()) break;
    // Wait for each thread's interrupt stop. A signal being delivered meanwhile is taken
    // out and stashed; it is restored as pending.
    for (pid_t t : fresh) {
      for (;;) {
        auto s = wait_thread_while(t, keep_going);
        if (!s) return fail(s.error().context(fmt::format("freezing process {}", pid)));
        if (s->kind == StopInfo::Exited) break;
        if (s->kind == StopInfo::EventStop) {
          alive.push_back(t);
          break;
        }
        if (s->kind == StopInfo::SignalStop) {
          std::vector<uint8_t> info(128);
          if (::ptrace(PTRACE_GETSIGINFO, t, 0, info.data()) == 0) fp.stashed_[t].push_back(info);
          if (::ptrace(PTRACE_CONT, t, 0, 0) < 0) break;
          continue;
        }
        if (::ptrace(PTRACE_CONT, t, 0, 0) < 0) break;
      }
    }
  }
  fp.tids_ = alive;
  if (fp.tids_.empty() || std::find(alive.begin(), alive.end(), pid) == alive.end())
    return fail(ESRCH, fmt::format("process {} exited while it was being frozen", pid));
  fp.frozen_ = true;
  log::debug("froze process {} ({} threads)", pid, fp.tids_.size());
  return fp;
}

Status FrozenProcess::requeue_stashed() {
  if (stashed_.empty() || !attached_ || !frozen_) return {};
  auto site = find_syscall_site(pid_);
  if (!site) return fail(site.error());
  for (auto& [tid, infos] : stashed_) {
    RemoteCaller rc(tid, *site);
    // The signal goes back to the thread it was taken from. The siginfo lives on the
    // thread's stack below the red zone for the duration of the call.
    auto regs = get_regs(tid);
    if (!regs) continue;
    uint64_t buf = ((regs->rsp - 256 - 128) & ~15ull);
    for (auto& info : infos) {
      std::vector<uint8_t> old(128);
      if (!read_memory(pid_, buf, old)) continue;
      if (!write_memory(pid_, buf, info)) continue;
      int sig = 0;
      std::memcpy(&sig, info.data(), sizeof(sig));
      (void)rc.call(SYS_rt_tgsigqueueinfo, {static_cast<uint64_t>(pid_), static_cast<uint64_t>(tid),
                                            static_cast<uint64_t>(sig), buf});
      (void)write_memory(pid_, buf, old);
    }
  }
  stashed_.clear();
  return {};
}

void FrozenProcess::release() {
  if (!attached_) return;
  attached_ = false;
  // Remote calls need every thread stopped; after a failed freeze the stashed signals are
  // given back through PTRACE_DETACH's signal argument instead (one per thread).
  if (frozen_) {
    (void)requeue_stashed();
  } else {
    for (auto& [tid, infos] : stashed_) {
      int sig = 0;
      if (!infos.empty()) std::memcpy(&sig, infos.front().data(), sizeof(sig));
      ::ptrace(PTRACE_DETACH, tid, 0, sig);
    }
  }
  for (pid_t t : tids_) ::ptrace(PTRACE_DETACH, t, 0, 0);
  // Detaching resumes a thread that was in group-stop; put a stopped process back.
  if (was_stopped_) ::kill(pid_, SIGSTOP);
}

void FrozenProcess::kill_frozen() {
  if (!attached_) return;
  attached_ = false;
  ::kill(pid_, SIGKILL);
  for (pid_t t : tids_) ::ptrace(PTRACE_DETACH, t, 0, 0);
  // Return only once it is dead (a zombie or reaped), so a restart right after us does not
  // race with its exit. Its PID stays in use until its parent reaps it.
  for (int i = 0; i < 500; ++i) {
    // The killed threads are our tracees: each stays a zombie (and the process counts it)
    // until we wait for it, so without this a multi-threaded process only became a zombie
    // when we exited, after the 1 s below. Waiting for the leader hands it back to its parent.
    for (pid_t t : tids_) (void)::waitpid(t, nullptr, __WALL | WNOHANG);
    auto st = proc::read_stat(pid_);
    if (!st || proc::is_zombie(*st)) {
      // The leader can be waited for only once its other threads are gone: now.
      (void)::waitpid(pid_, nullptr, __WALL | WNOHANG);
      break;
    }
    ::usleep(2000);
  }
}

}  // namespace crkit::inject

namespace crkit::inject {

bool FrozenTree::contains(pid_t pid) const {
  return std::any_of(procs_.begin(), procs_.end(),
                     [pid](const FrozenProcess& p) { return p.pid() == pid; });
}

std::vector<pid_t> FrozenTree::pids() const {
  std::vector<pid_t> out;
  for (const auto& p : procs_) out.push_back(p.pid());
  return out;
}

void FrozenTree::keep_only(const std::vector<pid_t>& order) {
  std::vector<FrozenProcess> kept;
  for (pid_t pid : order)
    for (auto& p : procs_)
      if (p.pid() == pid) {
        kept.push_back(std::move(p));
        break;
      }
  release();  // what is left of procs_: moved-from (no-ops) or no longer in the request
  procs_ = std::move(kept);
}

void FrozenTree::release() {
  for (auto& p : procs_) (void)p.requeue_stashed();
  for (auto& p : procs_) p.release();
  procs_.clear();
}

void FrozenTree::kill_frozen() {
  // All at once, so that no process of the tree sees another one die while it still runs.
  for (auto& p : procs_) ::kill(p.pid(), SIGKILL);
  for (auto& p : procs_) p.kill_frozen();
  procs_.clear();
}

}  // namespace crkit::inject
