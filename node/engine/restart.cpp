#include "engine/restart.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "engine/loaded_image.hpp"
#include "engine/remote_scratch.hpp"
#include "engine/standin.hpp"
#include "image/image_file.hpp"
#include "inject/ptrace_thread.hpp"
#include "inject/remote_syscall.hpp"
#include "proc/proc.hpp"
#include "resources/files.hpp"
#include "resources/libcr_peer.hpp"
#include "resources/process.hpp"
#include "resources/process_tree.hpp"
#include "resources/threads.hpp"

namespace crkit::engine {
namespace {

constexpr int kCapSysAdmin = 21;
constexpr int kCapCheckpointRestore = 40;

bool have_cap(int cap) {
  auto st = proc::read_status(::getpid());
  return st && (st->cap_eff >> cap & 1);
}

Status write_id_map(const char* file, const std::string& text) {
  int fd = ::open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail_errno(fmt::format("opening {}", file));
  ssize_t n = ::write(fd, text.data(), text.size());
  int e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return fail_sys(e, fmt::format("writing {}", file));
  return {};
}

// Enters a new user namespace in which we hold the capabilities needed to choose PIDs
// (in a PID namespace it owns); our uid/gid map to themselves.
Status enter_user_namespace() {
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER) < 0)
    return fail_errno("creating a user namespace for an unprivileged restart");
  CRKIT_TRY(write_id_map("/proc/self/setgroups", "deny"));
  CRKIT_TRY(write_id_map("/proc/self/uid_map", fmt::format("{} {} 1\n", uid, uid)));
  CRKIT_TRY(write_id_map("/proc/self/gid_map", fmt::format("{} {} 1\n", gid, gid)));
  return {};
}

// Kills whatever of the restart exists when dropped without release(): nothing
// half-restored survives a failure.
class RestartGuard {
 public:
  explicit RestartGuard(UniqueFd* channel) : channel_(channel) {}
  ~RestartGuard() {
    if (!armed_) return;
    for (pid_t p : known_) ::kill(p, SIGKILL);
    for (pid_t p : children_) ::kill(p, SIGKILL);
    // Stand-ins not reported yet see end of file on the channel and exit.
    channel_->reset();
    // A traced process's death is reported to us first; collect it so it can be reaped.
    for (pid_t p : traced_) wait_gone(p);
    for (pid_t p : children_) wait_gone(p);
  }
  void known(pid_t p) { known_.insert(p); }
  void child(pid_t p) { children_.insert(p); }
  void traced(pid_t p) { traced_.insert(p); }
  void reaped(pid_t p) {
    children_.erase(p);
    known_.erase(p);
  }
  const std::set<pid_t>& children() const { return children_; }
  void release() { armed_ = false; }

 private:
  static void wait_gone(pid_t p) {
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(p, &st, __WALL);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 || WIFEXITED(st) || WIFSIGNALED(st)) return;
    }
  }
  UniqueFd* channel_;
  bool armed_ = true;
  std::set<pid_t> known_, children_, traced_;
};

// One process being restored.
struct Restoring {
  size_t index = 0;
  const ProcessImage* img = nullptr;
  resources::RestoreTarget t;
  std::optional<inject::RemoteCaller> main;
  std::optional<RemoteScratch> scratch;
  int report_fd = -1;                     // the channel, as numbered in the process
  std::map<resources::ShmKey, long> shm;  // shared memory it holds
  std::vector<pid_t> helpers;             // helpers it created, as it sees them: reaped by it
};

std::string describe_status(int st) {
  if (WIFEXITED(st)) return fmt::format("exit status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return fmt::format("killed by signal {}", WTERMSIG(st));
  return fmt::format("wait status {:#x}", st);
}

// Body of the PID namespace's init: creates the top of the tree, then reaps children. It
// passes the root's wait status on and lives until the namespace is empty.
[[noreturn]] void nsinit_main(StandinContext c, int status_fd) {
  ::close(c.restorer_fd);
  c.restorer_fd = -1;
  // Until the restart has succeeded, our death (and so the namespace's) follows
  // cr_restart's; SIGUSR1 from cr_restart says it succeeded, after which the restored job
  // outlives cr_restart as it would outside a namespace.
  // cr_restart may exit as soon as it has the acknowledgement, so the handler sends it only
  // after the parent-death signal is off: acknowledged from the main loop instead, the
  // release could race cr_restart's exit (and its SIGKILL would end the whole namespace).
  static volatile sig_atomic_t released = 0;
  static volatile sig_atomic_t ack_fd = -1;
  ack_fd = c.report_fd;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    const int saved_errno = errno;
    ::prctl(PR_SET_PDEATHSIG, 0);
    released = 1;
    if (ack_fd >= 0) {
      ssize_t n = ::send(ack_fd, "RELEASED", 8, MSG_NOSIGNAL);  // async-signal-safe
      (void)n;
    }
    errno = saved_errno;
  };
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::sigprocmask(SIG_BLOCK, &usr1, nullptr);  // until the parent-death signal is final, below
  ::sigaction(SIGUSR1, &sa, nullptr);        // no SA_RESTART: waitpid() returns to look at it
  // A private /proc that shows this namespace's PIDs (best effort).
  if (::unshare(CLONE_NEWNS) == 0 &&
      ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0)
    ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  auto top = create_top_level(c);
  if (!top) {
    report_error(c.report_fd, -1, top.error());
    ::_exit(1);
  }
  // Opening the files with another user's rights changed our file-system ids, which clears
  // the parent-death signal: arm it again (unless the restart is already through).
  if (!released) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Only now may the release come: had it come before the line above, the signal would be
  // armed again after its acknowledgement.
  ::sigprocmask(SIG_UNBLOCK, &usr1, nullptr);
  int report_fd = c.report_fd;
  // Hold nothing of cr_restart's (image file, terminal, pipes) for the job's lifetime.
  close_all_fds_except({report_fd, status_fd});
  ::signal(SIGPIPE, SIG_IGN);  // the status reader may be gone (cr_request_restart)
  bool root_done = false;
  int root_status = 0;
  int other_failure = 0;  // the first process other than the root that did not end well
  auto code_of = [](int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); };
  for (;;) {
    if (released && report_fd >= 0) {
      ack_fd = -1;
      ::close(report_fd);
      report_fd = -1;
    }
    int status = 0;
    pid_t r = ::waitpid(-1, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    // The namespace is empty: end as the root did, or else as the first other process that
    // failed, so that whoever waits for us (a cr_request_restart caller or a process manager,
    // to whom we stand for the whole namespace) sees the job's status.
    if (r < 0) {
      const int root_code = root_done ? code_of(root_status) : 0;
      ::_exit(root_code ? root_code : other_failure);
    }
    if (r != top->root && r != top->helper && other_failure == 0) other_failure = code_of(status);
    if (r == top->root) {
      root_done = true;
      root_status = status;
      if (status_fd >= 0) {
        ssize_t n = ::write(status_fd, &status, sizeof(status));
        (void)n;
        ::close(status_fd);
        status_fd = -1;
      }
      if (!released && report_fd >= 0)
        report_error(report_fd, 0,
                     Error{EIO, fmt::format("process {} died during the restart: {}", r,
                                            describe_status(status))});
    }
  }
}

// Lets the namespace's init outlive us (SIGUSR1 turns its parent-death signal off) and waits
// until it says so: exiting earlier could kill the restored job with it.
Status release_namespace(pid_t init, int restorer_fd) {
  if (::kill(init, SIGUSR1) < 0) return fail_errno("releasing the PID namespace's init");
  constexpr int kTimeoutMs = 30000;
  for (int waited = 0; waited < kTimeoutMs; waited += 100) {
    struct pollfd pf {
      restorer_fd, POLLIN, 0
    };
    int pr = ::poll(&pf, 1, 100);
    if (pr < 0 && errno != EINTR) return fail_errno("waiting for the PID namespace's init");
    if (pr <= 0) {
      int st = 0;
      if (::waitpid(init, &st, WNOHANG | __WALL) == init)
        return fail(EIO,
                    fmt::format("the PID namespace's init {} died: {}", init, describe_status(st)));
      continue;
    }
    CRKIT_ASSIGN(Report rep, read_report(restorer_fd));
    if (rep.kind == Report::Err) return fail(rep.error.context("the restarted job"));
    if (rep.kind == Report::Released && rep.real == init) return {};
  }
  return fail(ETIMEDOUT, fmt::format("the PID namespace's init {} did not confirm its release "
                                     "within {} s",
                                     init, kTimeoutMs / 1000));
}

Status seize(pid_t real, pid_t vpid) {
  // EXITKILL: should cr_restart die while it holds the stand-in, the stand-in dies too
  // (until the final detach, which makes the restored process independent of us).
  if (::ptrace(PTRACE_SEIZE, real, 0,
               PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL) < 0)
    return fail_errno(fmt::format("attaching to the stand-in of process {}", vpid));
  if (::ptrace(PTRACE_INTERRUPT, real, 0, 0) < 0)
    return fail_errno(fmt::format("stopping the stand-in of process {}", vpid));
  for (;;) {
    CRKIT_ASSIGN(auto s, inject::wait_thread(real));
    if (s.kind == inject::StopInfo::EventStop) return {};
    if (s.kind == inject::StopInfo::Exited)
      return fail(EIO, fmt::format("the stand-in of process {} died", vpid));
    ::ptrace(PTRACE_CONT, real, 0, 0);
  }
}

// What the stand-in left behind that the restored process must not have: its helper
// children (killed by now) and the signals it was sent (SIGCHLD from them).
Status clean_up_standin(Restoring& r) {
  auto& main = *r.main;
  for (pid_t h : r.helpers)
    CRKIT_TRY(main.check(fmt::format("collecting the helper process {}", h), SYS_wait4,
                         {static_cast<uint64_t>(h), 0, __WALL, 0}));
  // Dequeue every pending signal: rt_sigtimedwait(all, NULL, {0, 0}) until EAGAIN.
  CRKIT_ASSIGN(uint64_t set, r.scratch->put_struct(0, ~0ull));
  CRKIT_ASSIGN(uint64_t zero, r.scratch->put_struct(64, std::array<int64_t, 2>{0, 0}));
  for (int i = 0; i < 256; ++i) {
    CRKIT_ASSIGN(long got, main.call(SYS_rt_sigtimedwait, {set, 0, zero, 8}));
    if (got == -EAGAIN) return {};
    if (got < 0 && got != -EINTR)
      return fail_sys(static_cast<int>(-got), "discarding the stand-in's pending signals");
  }
  return fail(EIO, "discarding the stand-in's pending signals: they keep coming");
}

// Phase 1 of a transplant: from a stopped stand-in to the saved address space, empty.
Status prepare(Restoring& r, const LoadedImage& img, bool check_cpu) {
  auto& t = r.t;
  CRKIT_ASSIGN(auto current, proc::read_maps(t.real_pid));
  CRKIT_ASSIGN(uint64_t hint,
               resources::find_free_range(r.img->vmas, current, RemoteScratch::kSize));
  CRKIT_ASSIGN(RemoteScratch scratch, RemoteScratch::map(t.real_pid, *r.main, hint));
  r.scratch.emplace(std::move(scratch));
  t.scratch = &*r.scratch;
  if (check_cpu) {
    // The CPU state must fit this machine: same XSAVE layout, no features it lacks.
    CRKIT_ASSIGN(auto here, inject::get_xstate(t.real_pid));
    const uint64_t need = img.info.xfeatures, have = inject::xstate_features(here);
    if (img.info.xsave_size != here.size() || (need & ~have))
      return fail(
          kCrEBadArch,
          fmt::format(
              "the image's CPU state (XSAVE {} bytes, features {:#x}) does not fit this machine "
              "(XSAVE {} bytes, features {:#x}); restart on a machine with the same CPU features",
              img.info.xsave_size, need, here.size(), have));
  }
  CRKIT_TRY(r.main->check("closing the restorer's channel", SYS_close,
                          {static_cast<uint64_t>(r.report_fd)}));
  CRKIT_TRY(clean_up_standin(r));
  CRKIT_TRY(resources::unregister_standin_rseq(t));
  t.shm_fds = r.shm;
  CRKIT_TRY(resources::rebuild_address_space(t, r.img->vmas));
  return {};
}

// Phase 2, once the pages are in: everything else but credentials and registers.
Status restore_state(Restoring& r) {
  auto& t = r.t;
  const auto& p = r.img->process;
  CRKIT_TRY(resources::finalize_protections(t, r.img->vmas));
  CRKIT_TRY(resources::restore_mm_layout(t, p));
  CRKIT_TRY(resources::restore_sigactions(t, p));
  CRKIT_TRY(resources::restore_comm(t, p));
  CRKIT_TRY(resources::create_threads(t, r.img->threads));
  for (const auto& th : r.img->threads) CRKIT_TRY(resources::restore_thread_state(t, th));
  CRKIT_TRY(resources::restore_shared_pending(t, p));
  CRKIT_TRY(resources::restore_itimers(t, p));
  return {};
}

// Phase 3: credentials (dropping capabilities ends our ability to choose TIDs) and the
// parent-death signal.
Status restore_identity(Restoring& r, bool orphan) {
  auto& t = r.t;
  const auto& p = r.img->process;
  CRKIT_TRY(resources::restore_rlimits(t, p));
  for (const auto& th : r.img->threads) CRKIT_TRY(resources::restore_thread_creds(t, th, p));
  CRKIT_TRY(resources::restore_dumpable(t, p));
  CRKIT_TRY(resources::restore_pdeath_signal(t, p, orphan));
  return {};
}

// Last: the registers, once nothing else can fail.
Status restore_registers(Restoring& r) {
  CRKIT_TRY(r.scratch->unmap(*r.main));
  for (const auto& th : r.img->threads) CRKIT_TRY(resources::restore_thread_registers(r.t, th));
  return {};
}

Status restore_groups(std::vector<std::unique_ptr<Restoring>>& procs,
                      const resources::TreePlan& plan) {
  // Leaders create their groups first; then the others join.
  for (auto want : {resources::TreePlan::Group::Lead, resources::TreePlan::Group::Join})
    for (auto& r : procs) {
      const auto& node = plan.nodes[r->index];
      if (node.group != want) continue;
      const uint64_t g = want == resources::TreePlan::Group::Lead ? 0 : node.join_pgid;
      CRKIT_TRY(r->main->check(fmt::format("restoring the process group {} of process {}",
                                           r->img->process.pgid, r->img->process.pid),
                               SYS_setpgid, {0, g}));
    }
  return {};
}

// EBUSY naming the first PID or TID of the image that a live process uses, also as its
// process group or session. One held by a zombie is not counted: it is free as soon as its
// parent reaps it (the stand-ins wait for that).
Status check_pids_free(const LoadedImage& img) {
  std::set<pid_t> ids;
  for (const auto& pi : img.procs)
    for (const auto& th : pi.threads) ids.insert(th.tid);
  CRKIT_ASSIGN(auto table, proc::read_process_table());
  for (const auto& st : table) {
    if (proc::is_zombie(st)) continue;
    if (ids.count(st.pid)) return fail(clone_error(EEXIST, st.pid));
    for (pid_t g : {st.pgrp, st.session})
      if (ids.count(g))
        return fail(EBUSY,
                    fmt::format("process id {} is in use as the {} of process {} ({}); use "
                                "--no-restore-pid to restart in a new PID namespace",
                                g, g == st.pgrp ? "process group" : "session", st.pid, st.comm));
  }
  for (pid_t id : ids)  // threads are not listed in /proc
    if (auto st = proc::read_stat(id); st && !proc::is_zombie(*st))
      return fail(clone_error(EEXIST, id));
  return {};
}

// Another user's image may not name files under /proc: opened by root (with that user's
// file rights but root's other privileges), /proc/PID/{root,cwd,fd} would lead past
// directories the user cannot enter.
Status check_no_proc_paths(const LoadedImage& img, const resources::RestoreTarget& paths,
                           const std::string& name) {
  auto bad = [&](const std::string& p) {
    const std::string r = paths.relocate(p);
    return r == "/proc" || r.rfind("/proc/", 0) == 0;
  };
  for (const auto& pi : img.procs) {
    std::vector<std::string> named{pi.process.cwd, pi.process.root, pi.process.mm.exe_path};
    for (const auto& f : pi.fds)
      if (f.kind != image::FdKind::Socket && f.kind != image::FdKind::Pipe &&
          f.kind != image::FdKind::ExternalPipe && f.kind != image::FdKind::Tty)
        named.push_back(f.path);
    for (const auto& v : pi.vmas)
      if (v.kind == image::VmaKind::FilePrivate || v.kind == image::VmaKind::FileShared)
        named.push_back(v.name);
    for (const auto& p : named)
      if (bad(p))
        return fail(EPERM, fmt::format("{}: process {} of another user's image names {}: files "
                                       "under /proc are not reopened for another user",
                                       name, pi.process.pid, p));
  }
  return {};
}

// The identities the restored processes may have. An unprivileged restarter restores only
// its own processes. Root restores anything from its own images, but an image file another
// user owns holds only that user's processes: it cannot make root start a process with
// more (a crafted image could claim any uid, group or capability).
struct Identity {
  bool any = false;  // root's own image (or one read from a pipe root was handed)
  uid_t uid = 0;
  std::set<gid_t> gids;
  std::string whose;  // for messages
};

Identity allowed_identity(int fd) {
  Identity id;
  struct stat st {};
  const bool file = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (::getuid() == 0) {
    if (!file || st.st_uid == 0) {
      id.any = true;
      return id;
    }
    id.uid = st.st_uid;
    id.gids.insert(st.st_gid);
    if (const struct passwd* pw = ::getpwuid(st.st_uid)) {
      id.gids.insert(pw->pw_gid);
      int n = 64;
      std::vector<gid_t> groups(static_cast<size_t>(n));
      if (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
        groups.resize(static_cast<size_t>(n));
        ::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n);
      }
      for (int i = 0; i < n && i < static_cast<int>(groups.size()); ++i) id.gids.insert(groups[i]);
    }
    id.whose = fmt::format(
        "the image file belongs to uid {}, so it may restore only that user's "
        "processes",
        id.uid);
    return id;
  }
  id.uid = ::getuid();
  id.gids.insert(::getgid());
  id.gids.insert(::getegid());
  int n = ::getgroups(0, nullptr);
  std::vector<gid_t> groups(static_cast<size_t>(std::max(n, 0)));
  if (n > 0 && ::getgroups(n, groups.data()) == n) id.gids.insert(groups.begin(), groups.end());
  id.whose = fmt::format("you (uid {}) may restart only your own processes", id.uid);
  return id;
}

Status check_identities(const LoadedImage& img, const Identity& id, const std::string& name) {
  if (id.any) return {};
  for (const auto& pi : img.procs) {
    const auto& c = pi.process.creds;
    auto refuse = [&](const std::string& what) {
      return fail(EPERM, fmt::format("{}: process {} of the image has {}; {}", name, pi.process.pid,
                                     what, id.whose));
    };
    for (uint32_t u : {c.uid, c.euid, c.suid, c.fsuid})
      if (u != id.uid) return refuse(fmt::format("uid {}", u));
    for (uint32_t g : {c.gid, c.egid, c.sgid, c.fsgid})
      if (!id.gids.count(g)) return refuse(fmt::format("gid {}", g));
    for (uint32_t g : c.groups)
      if (!id.gids.count(g) && ::getuid() == 0) return refuse(fmt::format("group {}", g));
  }
  return {};
}

}  // namespace

Result<Restarted> restart_image(int fd, const std::string& name, const RestartOptions& opts) {
  image::ImageReader reader(fd, name);
  CRKIT_ASSIGN(LoadedImage img, load_image(reader));
  const size_t n = img.procs.size();

  const bool root = ::getuid() == 0;
  const Identity identity = allowed_identity(fd);
  CRKIT_TRY(check_identities(img, identity, name));

  resources::RestoreTarget paths;
  // Capabilities are restored only by root from its own images.
  paths.restarter_is_root = root && identity.any;
  // Another user's processes get neither root's terminal nor its session: they could push
  // input into root's shell (TIOCSTI).
  paths.isolate_terminal = root && !identity.any;
  if (paths.isolate_terminal) CRKIT_TRY(check_no_proc_paths(img, paths, name));
  paths.relocations = opts.relocations;
  paths.can_set_exe = true;  // PR_SET_MM_MAP falls back if the exe link cannot be changed
  for (const auto& pi : img.procs)
    CRKIT_TRY(resources::check_mapped_files(paths, pi.vmas, &pi.process.creds));

  const bool can_choose_pids = have_cap(kCapCheckpointRestore) || have_cap(kCapSysAdmin);
  const bool can_make_pidns = have_cap(kCapSysAdmin);
  const bool use_pidns = !opts.restore_pid || !can_choose_pids;
  if (use_pidns)
    for (const auto& pi : img.procs)
      if (pi.process.pid == 1)
        return fail(EINVAL, fmt::format("{}: cannot restart a process whose PID was 1", name));

  // Before anything is created or opened: a PID still in use (the original still running)
  // fails the restart here, so that it touches nothing.
  if (!use_pidns) CRKIT_TRY(check_pids_free(img));

  resources::TreeOptions topts;
  topts.restore_sid = opts.restore_sid;
  topts.restore_pgid = opts.restore_pgid;
  topts.restarter_sid = use_pidns ? -1 : ::getsid(0);
  topts.restarter_pgid = use_pidns ? -1 : ::getpgrp();
  topts.new_session = paths.isolate_terminal;
  std::vector<const image::ProcessRecord*> records;
  for (const auto& pi : img.procs) records.push_back(&pi.process);
  auto planned = resources::plan_tree(records, topts);
  if (!planned) return fail(planned.error().context(name));
  const resources::TreePlan& plan = *planned;
  for (const auto& w : plan.warnings) log::warn("{}", w);

  if (use_pidns && !can_make_pidns) {
    log::info("restarting in a new user and PID namespace (no privilege to choose PIDs here)");
    CRKIT_TRY(enter_user_namespace());
  } else if (use_pidns) {
    log::info("restarting in a new PID namespace");
  }

  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
    return fail_errno("creating the restorer's channel");
  UniqueFd restorer(sp[0]), standins(sp[1]);
  CRKIT_TRY(enable_credentials(restorer.get()));
  StandinContext ctx;
  ctx.img = &img;
  ctx.plan = &plan;
  ctx.paths = &paths;
  ctx.report_fd = standins.get();
  ctx.restorer_fd = restorer.get();
  ctx.root_as_sibling = opts.as_sibling && !use_pidns;

  RestartGuard guard(&restorer);
  Restarted out;
  out.original_pid = img.procs[0].process.pid;
  out.in_new_pidns = use_pidns;
  UniqueFd status_r, status_w;
  pid_t top_helper = -1;
  std::fflush(nullptr);
  if (use_pidns) {
    int pp[2];
    if (::pipe2(pp, O_CLOEXEC) < 0) return fail_errno("creating the status channel");
    status_r.reset(pp[0]);
    status_w.reset(pp[1]);
    pid_t init = opts.as_sibling ? clone_with_pid(CLONE_NEWPID | CLONE_PARENT, 0, 0)
                                 : clone_with_pid(CLONE_NEWPID, 0, SIGCHLD);
    if (init < 0) return fail_errno("creating a PID namespace for the restart");
    if (init == 0) {
      status_r.reset();
      nsinit_main(ctx, status_w.release());
    }
    guard.child(init);
    out.child = init;
  } else {
    CRKIT_ASSIGN(TopLevel top, create_top_level(ctx));
    guard.child(top.root);
    if (top.helper > 0) guard.child(top.helper);
    top_helper = top.helper;
    out.child = top.root;
  }
  standins.reset();
  status_w.reset();

  // Every stand-in reports, with its PID as we see it.
  std::vector<std::unique_ptr<Restoring>> procs(n);
  std::map<int, std::vector<pid_t>> helpers_of;  // creator index -> helpers (as it sees them)
  std::vector<pid_t> helper_pids;                // as we see them
  size_t ready = 0, helpers = 0;
  const size_t helpers_expected = plan.helper_count();
  auto process_name = [&](int i) {
    return i >= 0 && static_cast<size_t>(i) < n
               ? fmt::format("restarting process {}", img.procs[static_cast<size_t>(i)].process.pid)
               : std::string("restarting");
  };
  while (ready < n || helpers < helpers_expected) {
    if (int sig = opts.cancel_signal ? opts.cancel_signal() : 0)
      return fail(
          EINTR, fmt::format("the restart was cancelled by signal {} ({})", sig, ::strsignal(sig)));
    struct pollfd pf {
      restorer.get(), POLLIN, 0
    };
    int pr = ::poll(&pf, 1, 250);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return fail_errno("waiting for the stand-in processes");
    if (pr == 0) {
      // Our own children are ours to watch; the stand-ins watch theirs.
      for (pid_t c : std::set<pid_t>(guard.children())) {
        int st = 0;
        pid_t w = ::waitpid(c, &st, WNOHANG | __WALL);
        if (w < 0 && errno == ECHILD) {  // our parent's child (as_sibling): look at it
          auto ps = proc::read_stat(c);
          if (ps && !proc::is_zombie(*ps)) continue;
          return fail(EIO,
                      fmt::format("{}: process {} died", process_name(c == out.child ? 0 : -1), c));
        }
        if (w == c) {
          guard.reaped(c);
          return fail(
              EIO, fmt::format("{}: process {} died: {}", process_name(c == out.child ? 0 : -1), c,
                               describe_status(st)));
        }
      }
      continue;
    }
    CRKIT_ASSIGN(Report rep, read_report(restorer.get()));
    if (rep.kind == Report::Err) return fail(rep.error.context(process_name(rep.index)));
    if (rep.real <= 0) return fail(EIO, "a stand-in process reported without its credentials");
    guard.known(rep.real);
    if (rep.kind == Report::Helper) {
      ++helpers;
      helper_pids.push_back(rep.real);
      if (rep.index >= 0) helpers_of[rep.index].push_back(rep.vpid);
      continue;
    }
    if (rep.index < 0 || static_cast<size_t>(rep.index) >= n || procs[rep.index])
      return fail(EIO, fmt::format("unexpected report from stand-in {}", rep.real));
    auto r = std::make_unique<Restoring>();
    r->index = static_cast<size_t>(rep.index);
    r->img = &img.procs[r->index];
    r->t = paths;
    r->t.real_pid = rep.real;
    r->t.vpid = r->img->process.pid;
    r->t.real_tid_of[r->t.vpid] = rep.real;
    r->report_fd = rep.report_fd;
    r->shm = std::move(rep.shm_fds);
    procs[r->index] = std::move(r);
    ++ready;
  }
  for (auto& [creator, hs] : helpers_of) procs[static_cast<size_t>(creator)]->helpers = hs;

  // Runs a step for every process in image order; an error names the process.
  auto each = [&](const std::function<Status(Restoring&)>& step) -> Status {
    for (auto& r : procs)
      if (Status s = step(*r); !s)
        return fail(s.error().context(process_name(static_cast<int>(r->index))));
    return {};
  };
  // Take every stand-in over before anything else happens.
  auto take_over = [&](Restoring& r) -> Status {
    CRKIT_TRY(seize(r.t.real_pid, r.t.vpid));
    guard.traced(r.t.real_pid);
    return {};
  };
  CRKIT_TRY(each(take_over));
  auto find_site = [](Restoring& r) -> Status {
    CRKIT_ASSIGN(uint64_t site, inject::find_syscall_site(r.t.real_pid));
    r.main.emplace(r.t.real_pid, site);
    r.t.site = site;
    r.t.main = &*r.main;
    // From here on EXITKILL, not the parent-death signal, ties the stand-in to us: its
    // helper parent may go now.
    CRKIT_TRY(r.main->check("clearing the stand-in's parent-death signal", SYS_prctl,
                            {PR_SET_PDEATHSIG, 0}));
    return {};
  };
  CRKIT_TRY(each(find_site));
  for (pid_t h : helper_pids) ::kill(h, SIGKILL);
  if (top_helper > 0) {
    while (::waitpid(top_helper, nullptr, __WALL) < 0 && errno == EINTR) {
    }
    guard.reaped(top_helper);
  }

  CRKIT_TRY(each([&](Restoring& r) { return prepare(r, img, r.index == 0); }));
  std::map<pid_t, resources::RestoreTarget*> targets;
  for (auto& r : procs) targets[r->t.vpid] = &r->t;
  CRKIT_TRY(resources::fill_pages(targets, reader, std::move(img.first_pages), opts.pipeline,
                                  opts.progress, img.page_bytes));
  CRKIT_TRY(each(restore_state));
  CRKIT_TRY(restore_groups(procs, plan));
  CRKIT_TRY(each([&](Restoring& r) {
    return restore_identity(r, r.index != 0 && plan.nodes[r.index].parent < 0);
  }));
  // Files written after the checkpoint go back to their checkpoint-time size: checked for
  // every process first, so that a failure cannot leave some of them truncated.
  CRKIT_TRY(
      each([](Restoring& r) { return resources::truncate_written_files(r.t, r.img->fds, true); }));
  CRKIT_TRY(
      each([](Restoring& r) { return resources::truncate_written_files(r.t, r.img->fds, false); }));
  CRKIT_TRY(each(restore_registers));
  // libcr processes learn that they are restarted copies before they run again.
  const pid_t requester = opts.requester > 0 ? opts.requester : ::getpid();
  CRKIT_TRY(each([&](Restoring& r) {
    return resources::mark_restarted(r.t.real_pid, r.img->vmas, requester, opts.source);
  }));

  // A process that was stopped stops again as soon as it is let go: SIGSTOP is queued while
  // it is still held.
  for (auto& r : procs)
    if (r->img->process.was_stopped) ::kill(r->t.real_pid, SIGSTOP);
  // The namespace's init first, while every process is still held: a root that ended right
  // after its release would otherwise count as dying during the restart.
  if (use_pidns) CRKIT_TRY(release_namespace(out.child, restorer.get()));
  // Release every thread of every process together.
  for (auto& r : procs)
    for (auto& [v, real] : r->t.real_tid_of) ::ptrace(PTRACE_DETACH, real, 0, 0);
  guard.release();
  out.restored = procs[0]->t.real_pid;
  for (auto& r : procs) out.all.push_back(r->t.real_pid);
  out.status_fd = std::move(status_r);
  return out;
}

}  // namespace crkit::engine
