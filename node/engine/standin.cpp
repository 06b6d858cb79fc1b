#include "engine/standin.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

#include "proc/proc.hpp"
#include "resources/memory.hpp"
#include "resources/process.hpp"

namespace crkit::engine {
namespace {

constexpr size_t kMaxMessage = 16384;

void send_text(int fd, std::string msg) {
  if (msg.size() > kMaxMessage) msg.resize(kMaxMessage);
  struct ucred cred {
    ::getpid(), ::getuid(), ::getgid()
  };
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof cred)] = {};
  struct iovec iov {
    msg.data(), msg.size()
  };
  struct msghdr mh {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  struct cmsghdr* cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_CREDENTIALS;
  cm->cmsg_len = CMSG_LEN(sizeof cred);
  std::memcpy(CMSG_DATA(cm), &cred, sizeof cred);
  while (::sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

std::string describe_exit(const siginfo_t& si) {
  if (si.si_code == CLD_EXITED) return fmt::format("exit status {}", si.si_status);
  return fmt::format("killed by signal {} ({})", si.si_status, ::strsignal(si.si_status));
}

// Waits to be seized by cr_restart. Exits when cr_restart is gone (end of file on the
// channel); reports a child that dies meanwhile (the restart cannot succeed then).
[[noreturn]] void idle(int report_fd, int index) {
  for (;;) {
    struct pollfd p {
      report_fd, POLLIN, 0
    };
    if (::poll(&p, 1, 200) > 0) {
      char b;
      ssize_t n = ::recv(report_fd, &b, 1, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) ::_exit(1);
    }
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | __WALL) == 0 && si.si_pid != 0) {
      report_error(report_fd, index,
                   Error{EIO, fmt::format("process {} (a child of {}) died during the restart: {}",
                                          si.si_pid, ::getpid(), describe_exit(si))});
      ::_exit(1);
    }
  }
}

int exit_signal_of(const image::ProcessRecord& p) {
  return p.exit_signal < 65 ? static_cast<int>(p.exit_signal) : SIGCHLD;
}

Result<pid_t> spawn_standin(const StandinContext& c, size_t index);
Result<pid_t> spawn_helper(const StandinContext& c, int creator,
                           const std::vector<size_t>& orphans);

// A child of the creator does not keep cr_restart's end of the channel.
StandinContext inherit(const StandinContext& parent) {
  StandinContext c = parent;
  if (c.restorer_fd >= 0) ::close(c.restorer_fd);
  c.restorer_fd = -1;
  return c;
}

[[noreturn]] void run_standin(const StandinContext& parent, size_t i) {
  const StandinContext c = inherit(parent);
  int report_fd = c.report_fd;
  const ProcessImage& pi = c.img->procs[i];
  const image::ProcessRecord& p = pi.process;
  const resources::TreePlan::Node& node = c.plan->nodes[i];
  auto fail_out = [&](const Error& e) {
    report_error(report_fd, static_cast<int>(i), e);
    ::_exit(1);
  };
  // Should our creator die half-way, so do we (a stand-in never outlives a failed restart).
  // The transplant replaces this with the saved parent-death signal.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Children that belong to the session this process was born into come before its setsid().
  for (size_t k : node.children_before_setsid)
    if (auto r = spawn_standin(c, k); !r) fail_out(r.error());
  if (node.setsid && ::setsid() < 0)
    fail_out(errno_error(fmt::format("process {}: restoring its session (setsid)", p.pid)));
  for (size_t k : node.children_after_setsid)
    if (auto r = spawn_standin(c, k); !r) fail_out(r.error());
  if (!node.adopted_orphans.empty())
    if (auto r = spawn_helper(c, static_cast<int>(i), node.adopted_orphans); !r)
      fail_out(r.error());

  // What stays open besides the restored table: the channel and the shared memory objects
  // this process maps (the transplant maps, then closes them).
  auto shm = resources::shared_memory_of(pi.vmas);
  std::vector<int> keep{report_fd};
  for (const auto& key : shm) {
    auto it = c.files->shared_memory.find(key);
    if (it == c.files->shared_memory.end() || !it->second)
      fail_out(Error{
          EIO, fmt::format("process {}: a shared memory object it maps was not made", p.pid)});
    keep.push_back(it->second.get());
  }
  if (Status s = resources::install_fd_table(pi.fds, *c.files, &keep); !s)
    fail_out(s.error().context(fmt::format("process {}", p.pid)));
  report_fd = keep[0];
  if (Status s = resources::assume_file_credentials(p); !s)
    fail_out(s.error().context(fmt::format("process {}", p.pid)));
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a change of file-system ids cleared it
  if (Status s = resources::apply_process_attrs_in_standin(p, *c.paths); !s)
    fail_out(s.error().context(fmt::format("process {}", p.pid)));
  std::string msg = fmt::format("OK {} {} {}", i, report_fd, shm.size());
  for (size_t k = 0; k < shm.size(); ++k)
    msg += fmt::format(" {} {} {}", shm[k].first, shm[k].second, keep[k + 1]);
  send_text(report_fd, msg);
  idle(report_fd, static_cast<int>(i));
}

[[noreturn]] void run_helper(const StandinContext& parent, int creator,
                             const std::vector<size_t>& orphans) {
  const StandinContext c = inherit(parent);
  if (c.img->index_of(::getpid()) >= 0) ::_exit(3);  // took a PID of the image: retried
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (creator < 0 && c.plan->top_level_setsid && ::setsid() < 0) {
    report_error(c.report_fd, -1, errno_error("starting a session for the orphaned processes"));
    ::_exit(1);
  }
  for (size_t o : orphans)
    if (auto r = spawn_standin(c, o); !r) {
      report_error(c.report_fd, static_cast<int>(o), r.error());
      ::_exit(1);
    }
  // Hold nothing of the image's files (a pipe end kept open here would keep a reader from
  // seeing end of file): only the channel.
  close_all_fds_except({c.report_fd});
  send_text(c.report_fd, fmt::format("HELPER {} {}", creator, ::getpid()));
  idle(c.report_fd, -1);
}

// A PID held by a zombie - typically an original process killed by cr_checkpoint --kill
// whose parent (or init, for an orphan) has not reaped it yet - is free soon.
bool wait_until_reaped(pid_t pid) {
  for (int i = 0; i < 500; ++i) {  // up to 10 s
    auto st = proc::read_stat(pid);
    if (!st) return true;
    if (!proc::is_zombie(*st)) return false;
    ::usleep(20000);
  }
  return false;
}

Result<pid_t> spawn_standin(const StandinContext& c, size_t index) {
  const image::ProcessRecord& p = c.img->procs[index].process;
  // CLONE_PARENT takes the exit signal from the creator (it must be 0 here).
  const bool sibling = index == 0 && c.root_as_sibling;
  const uint64_t flags = sibling ? CLONE_PARENT : 0;
  const int exit_signal = sibling ? 0 : exit_signal_of(p);
  pid_t pid = clone_with_pid(flags, p.pid, exit_signal);
  if (pid < 0 && errno == EEXIST && wait_until_reaped(p.pid))
    pid = clone_with_pid(flags, p.pid, exit_signal);
  if (pid < 0) return fail(clone_error(errno, p.pid));
  if (pid == 0) run_standin(c, index);
  return pid;
}

Result<pid_t> spawn_helper(const StandinContext& c, int creator,
                           const std::vector<size_t>& orphans) {
  // Any PID will do, but not one of the image's (the helper checks too, and exits at once).
  // When the next PIDs are the image's (a dense image in a fresh PID namespace), choose
  // one past them.
  pid_t above = 0;
  for (const auto& pi : c.img->procs)
    for (const auto& th : pi.threads) above = std::max(above, th.tid);
  for (int attempt = 0; attempt < 4096; ++attempt) {
    pid_t want = attempt < 32 ? 0 : above + (attempt - 31);
    pid_t h = clone_with_pid(0, want, SIGCHLD);
    if (h < 0 && want > 0 && errno == EEXIST) continue;
    if (h < 0) return fail_errno("creating a helper process for the orphaned processes");
    if (h == 0) run_helper(c, creator, orphans);
    if (c.img->index_of(h) < 0) return h;
    ::waitpid(h, nullptr, 0);  // it got a PID of the image and exits at once: again
  }
  return fail(EAGAIN,
              "creating a helper process for the orphaned processes: no PID outside "
              "the image's was free");
}

}  // namespace

void close_all_fds_except(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned from = 0;
  for (int fd : keep) {
    if (fd < 0 || static_cast<unsigned>(fd) < from) continue;
    if (static_cast<unsigned>(fd) > from)
      ::syscall(SYS_close_range, from, static_cast<unsigned>(fd) - 1, 0u);
    from = static_cast<unsigned>(fd) + 1;
  }
  ::syscall(SYS_close_range, from, ~0u, 0u);
}

pid_t clone_with_pid(uint64_t flags, pid_t want, int exit_signal) {
  struct clone_args ca {};
  ca.flags = flags;
  ca.exit_signal = static_cast<uint64_t>(exit_signal);
  pid_t tid[1] = {want};
  if (want > 0) {
    ca.set_tid = reinterpret_cast<uint64_t>(tid);
    ca.set_tid_size = 1;
  }
  return static_cast<pid_t>(::syscall(SYS_clone3, &ca, sizeof(ca)));
}

Error clone_error(int e, pid_t want) {
  if (e == EEXIST)
    return Error{EBUSY,
                 fmt::format("process id {} is in use (is the original process still running?); "
                             "use --no-restore-pid to restart it in a new PID namespace",
                             want)};
  if (e == EPERM)
    return Error{EPERM,
                 fmt::format("creating process {} with its original id: Operation not permitted "
                             "(cr_restart needs CAP_CHECKPOINT_RESTORE)",
                             want)};
  return sys_error(e, fmt::format("creating process {} with its original id", want));
}

void report_error(int report_fd, int index, const Error& e) {
  send_text(report_fd, fmt::format("ERR {} {} {}", index, e.code, e.message));
}

Result<TopLevel> create_top_level(StandinContext c) {
  const std::vector<image::VmaRecord> vmas = c.img->all_vmas();
  const std::vector<image::FdRecord> fds = c.img->all_fds();
  CRKIT_ASSIGN(auto shm, resources::create_shared_memory(vmas));
  auto creds_of = [&](pid_t pid) -> const image::Credentials* {
    int i = c.img->index_of(pid);
    return i < 0 ? nullptr : &c.img->procs[static_cast<size_t>(i)].process.creds;
  };
  CRKIT_ASSIGN(resources::OpenFiles files,
               resources::open_files(fds, c.img->contents, std::move(shm), *c.paths, creds_of));
  c.files = &files;
  std::fflush(nullptr);  // no buffered output is written twice by a child
  TopLevel top;
  CRKIT_ASSIGN(top.root, spawn_standin(c, 0));
  if (!c.plan->top_level_orphans.empty()) {
    auto h = spawn_helper(c, -1, c.plan->top_level_orphans);
    if (!h) {
      ::kill(top.root, SIGKILL);
      ::waitpid(top.root, nullptr, __WALL);
      return fail(h.error());
    }
    top.helper = *h;
  }
  return top;  // our copies of the opened files close here; the stand-ins hold theirs
}

Status enable_credentials(int restorer_fd) {
  int one = 1;
  if (::setsockopt(restorer_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
    return fail_errno("enabling credentials on the restorer's channel");
  return {};
}

Result<Report> read_report(int fd) {
  std::vector<char> buf(kMaxMessage + 1);
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(struct ucred))] = {};
  struct iovec iov {
    buf.data(), kMaxMessage
  };
  struct msghdr mh {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  do n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno("reading the reports of the stand-in processes");
  if (n == 0) return fail(ENODATA, "every stand-in process exited before reporting");
  Report r;
  for (struct cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS) {
      struct ucred cred {};
      std::memcpy(&cred, CMSG_DATA(cm), sizeof cred);
      r.real = cred.pid;
    }
  std::string text(buf.data(), static_cast<size_t>(n));
  std::istringstream in(text);
  std::string kind;
  in >> kind;
  auto bad = [&]() { return fail(EIO, "unexpected message from a stand-in process: " + text); };
  if (kind == "OK") {
    r.kind = Report::Ok;
    size_t count = 0;
    if (!(in >> r.index >> r.report_fd >> count)) return bad();
    for (size_t k = 0; k < count; ++k) {
      uint64_t dev = 0, ino = 0;
      long shm_fd = -1;
      if (!(in >> dev >> ino >> shm_fd)) return bad();
      r.shm_fds[{dev, ino}] = shm_fd;
    }
  } else if (kind == "HELPER") {
    r.kind = Report::Helper;
    if (!(in >> r.index >> r.vpid)) return bad();
  } else if (kind == "RELEASED") {
    r.kind = Report::Released;  // the namespace's init: the restart no longer ties it to us
  } else if (kind == "ERR") {
    r.kind = Report::Err;
    if (!(in >> r.index >> r.error.code)) return bad();
    std::getline(in >> std::ws, r.error.message, '\0');
  } else {
    return bad();
  }
  return r;
}

}  // namespace crkit::engine
