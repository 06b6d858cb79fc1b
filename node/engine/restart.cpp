#include "engine/restart.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "common/cr_errors.hpp"
#include "common/log.hpp"
#include "engine/remote_scratch.hpp"
#include "image/image_file.hpp"
#include "inject/ptrace_thread.hpp"
#include "inject/remote_syscall.hpp"
#include "proc/proc.hpp"
#include "resources/files.hpp"
#include "resources/process.hpp"
#include "resources/threads.hpp"

namespace crkit::engine {
namespace {

constexpr int kCapSysAdmin = 21;
constexpr int kCapCheckpointRestore = 40;

// Everything of an image except the page contents, which are streamed at the end.
struct LoadedImage {
  image::ImageInfo info;
  image::ProcessRecord process;
  std::vector<image::ThreadRecord> threads;
  std::vector<image::VmaRecord> vmas;
  std::vector<image::FdRecord> fds;
  resources::FileContents contents;
  std::optional<image::RawRecord> first_pages;
  uint64_t page_bytes = 0;
};

Result<LoadedImage> load_metadata(image::ImageReader& reader) {
  LoadedImage img;
  CRKIT_TRY(reader.read_file_header());
  bool have_info = false, have_process = false;
  for (;;) {
    CRKIT_ASSIGN(auto rec, reader.next());
    if (!rec) break;
    const auto& name = reader.name();
    switch (rec->header.type) {
      case image::RecordType::ImageInfo: {
        CRKIT_ASSIGN(img.info, image::decode_record<image::ImageInfo>(*rec, name));
        have_info = true;
        break;
      }
      case image::RecordType::Process: {
        if (have_process)
          return fail(
              ENOSYS,
              fmt::format("{}: the image holds several processes; restarting process trees is not "
                          "supported yet",
                          name));
        CRKIT_ASSIGN(img.process, image::decode_record<image::ProcessRecord>(*rec, name));
        have_process = true;
        break;
      }
      case image::RecordType::Thread: {
        CRKIT_ASSIGN(auto th, image::decode_record<image::ThreadRecord>(*rec, name));
        img.threads.push_back(std::move(th));
        break;
      }
      case image::RecordType::Vma: {
        CRKIT_ASSIGN(auto v, image::decode_record<image::VmaRecord>(*rec, name));
        img.page_bytes += v.saved_pages * 4096;
        img.vmas.push_back(std::move(v));
        break;
      }
      case image::RecordType::Fd: {
        CRKIT_ASSIGN(auto f, image::decode_record<image::FdRecord>(*rec, name));
        img.fds.push_back(std::move(f));
        break;
      }
      case image::RecordType::FileContent: {
        CRKIT_ASSIGN(auto fc, image::decode_file_content(*rec, name));
        auto& [h, data] = fc;
        auto& buf = img.contents[h.content_id];
        if (buf.size() < h.offset + data.size()) buf.resize(h.offset + data.size());
        std::memcpy(buf.data() + h.offset, data.data(), data.size());
        break;
      }
      case image::RecordType::Pages:
        img.first_pages = std::move(*rec);
        break;
      default:
        break;
    }
    if (img.first_pages) break;
  }
  if (!have_info || !have_process)
    return fail(EINVAL, fmt::format("{}: the image has no {} record", reader.name(),
                                    have_info ? "Process" : "ImageInfo"));
  if (img.threads.empty())
    return fail(EINVAL, fmt::format("{}: the image has no Thread records", reader.name()));
  bool main_found = false;
  for (const auto& th : img.threads) main_found |= th.tid == img.process.pid;
  if (!main_found)
    return fail(EINVAL, fmt::format("{}: the image has no record of the main thread {}",
                                    reader.name(), img.process.pid));
  return img;
}

bool have_cap(int cap) {
  auto st = proc::read_status(::getpid());
  return st && (st->cap_eff >> cap & 1);
}

pid_t clone3_with(uint64_t flags, pid_t want) {
  struct clone_args ca {};
  ca.flags = flags;
  ca.exit_signal = SIGCHLD;
  pid_t tid[1] = {want};
  if (want > 0) {
    ca.set_tid = reinterpret_cast<uint64_t>(tid);
    ca.set_tid_size = 1;
  }
  return static_cast<pid_t>(::syscall(SYS_clone3, &ca, sizeof(ca)));
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

// Messages from the stand-in (or the PID namespace's init): "OK <fd>" or
// "ERR <code> <message>".
void report(int fd, const std::string& msg) {
  ssize_t n = ::write(fd, msg.data(), msg.size());
  (void)n;
}

[[noreturn]] void report_error_and_exit(int fd, const Error& e) {
  report(fd, fmt::format("ERR {} {}", e.code, e.message));
  ::_exit(1);
}

[[noreturn]] void standin_main(const LoadedImage& img, const resources::RestoreTarget& t,
                               const RestartOptions& opts, int report_fd) {
  // report_fd moves while the fd table is rebuilt; errors always go to its current number.
  auto fail_out = [&](const Error& e) { report_error_and_exit(report_fd, e); };
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (Status s = resources::assume_file_credentials(img.process); !s) fail_out(s.error());
  if (opts.restore_sid && img.process.sid == img.process.pid) {
    if (::setsid() < 0) fail_out(errno_error("restoring the session (setsid)"));
  }
  if (opts.restore_pgid && img.process.pgid == img.process.pid) {
    if (::setpgid(0, 0) < 0) fail_out(errno_error("restoring the process group (setpgid)"));
  }
  if (Status s = resources::restore_files_in_standin(img.fds, img.contents, t, &report_fd); !s)
    fail_out(s.error());
  if (Status s = resources::apply_process_attrs_in_standin(img.process, t); !s) fail_out(s.error());
  // PR_SET_PDEATHSIG stays set: should cr_restart die mid-way, the half-built process dies
  // with it. The transplant clears it as its last remote call.
  report(report_fd, fmt::format("OK {}", report_fd));
  // Wait to be taken over by the restorer (PTRACE_SEIZE + PTRACE_INTERRUPT).
  for (;;) ::pause();
}

// Kills whatever of the restart exists when dropped without release().
class StandinGuard {
 public:
  ~StandinGuard() {
    if (!armed_) return;
    for (pid_t p : {standin_, nsinit_})
      if (p > 0) ::kill(p, SIGKILL);
    for (pid_t p : {direct_child_})
      if (p > 0) ::waitpid(p, nullptr, 0);
  }
  void set(pid_t standin, pid_t nsinit, pid_t direct_child) {
    standin_ = standin, nsinit_ = nsinit, direct_child_ = direct_child;
  }
  void release() { armed_ = false; }

 private:
  bool armed_ = true;
  pid_t standin_ = -1, nsinit_ = -1, direct_child_ = -1;
};

Result<std::string> read_report(int fd) {
  char buf[4096];
  ssize_t n;
  do n = ::read(fd, buf, sizeof(buf) - 1);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return fail(EIO, "the stand-in process died before reporting");
  return std::string(buf, static_cast<size_t>(n));
}

Status parse_report(const std::string& msg, int* keep_fd) {
  if (msg.rfind("OK ", 0) == 0) {
    *keep_fd = std::atoi(msg.c_str() + 3);
    return {};
  }
  if (msg.rfind("ERR ", 0) == 0) {
    char* end = nullptr;
    long code = std::strtol(msg.c_str() + 4, &end, 10);
    std::string text = end && *end ? std::string(end + 1) : msg;
    return fail(static_cast<int>(code), text);
  }
  return fail(EIO, "unexpected message from the stand-in: " + msg);
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

// The transplant: from a stopped stand-in to the checkpointed process. Every step names
// itself in its error.
Status transplant(resources::RestoreTarget& t, const LoadedImage& img, image::ImageReader& reader,
                  std::optional<image::RawRecord> first_pages, const RestartOptions& opts,
                  int keep_fd) {
  CRKIT_ASSIGN(uint64_t site, inject::find_syscall_site(t.real_pid));
  t.site = site;
  inject::RemoteCaller main(t.real_pid, site);
  t.main = &main;
  CRKIT_ASSIGN(auto current, proc::read_maps(t.real_pid));
  CRKIT_ASSIGN(uint64_t hint, resources::find_free_range(img.vmas, current, RemoteScratch::kSize));
  CRKIT_ASSIGN(RemoteScratch scratch, RemoteScratch::map(t.real_pid, main, hint));
  t.scratch = &scratch;

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
  CRKIT_TRY(
      main.check("closing the restorer's channel", SYS_close, {static_cast<uint64_t>(keep_fd)}));
  CRKIT_TRY(resources::unregister_standin_rseq(t));
  CRKIT_TRY(resources::rebuild_address_space(t, img.vmas));
  CRKIT_TRY(
      resources::fill_pages(t, reader, std::move(first_pages), opts.progress, img.page_bytes));
  CRKIT_TRY(resources::finalize_protections(t, img.vmas));
  CRKIT_TRY(resources::restore_mm_layout(t, img.process));
  CRKIT_TRY(resources::restore_sigactions(t, img.process));
  CRKIT_TRY(resources::restore_comm(t, img.process));
  CRKIT_TRY(resources::create_threads(t, img.threads));
  for (const auto& th : img.threads) CRKIT_TRY(resources::restore_thread_state(t, th));
  CRKIT_TRY(resources::restore_shared_pending(t, img.process));
  CRKIT_TRY(resources::restore_itimers(t, img.process));
  for (const auto& th : img.threads) CRKIT_TRY(resources::restore_thread_creds(t, th, img.process));
  CRKIT_TRY(resources::restore_dumpable(t, img.process));
  CRKIT_TRY(main.check("clearing the parent-death signal", SYS_prctl, {PR_SET_PDEATHSIG, 0}));
  CRKIT_TRY(scratch.unmap(main));
  for (const auto& th : img.threads) CRKIT_TRY(resources::restore_thread_registers(t, th));
  return {};
}

// Body of the PID namespace's init: creates the stand-in with its original PID, then reaps
// children until the restored process ends and passes its wait status on.
[[noreturn]] void nsinit_main(const LoadedImage& img, const resources::RestoreTarget& t,
                              const RestartOptions& opts, int report_fd, int status_fd) {
  // Until the restart has succeeded, our death (and so the namespace's) follows
  // cr_restart's; SIGUSR1 from cr_restart says it succeeded, after which the restored job
  // outlives cr_restart as it would outside a namespace.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  struct sigaction sa {};
  sa.sa_handler = [](int) { ::prctl(PR_SET_PDEATHSIG, 0); };
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &sa, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::sigprocmask(SIG_UNBLOCK, &usr1, nullptr);  // cr_restart holds signals blocked meanwhile
  // A private /proc that shows this namespace's PIDs (best effort).
  if (::unshare(CLONE_NEWNS) == 0 &&
      ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0)
    ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  pid_t want = img.process.pid;
  pid_t child = want == 1 ? -1 : clone3_with(0, want);
  if (child < 0) {
    Error e = want == 1 ? Error{EINVAL, "cannot restart a process whose PID was 1"}
                        : clone_error(errno, want);
    report_error_and_exit(report_fd, e);
  }
  if (child == 0) {
    ::close(status_fd);
    standin_main(img, t, opts, report_fd);
  }
  ::close(report_fd);
  // Hold nothing of cr_restart's (image file, terminal, pipes) for the job's lifetime.
  if (status_fd > 0) ::syscall(SYS_close_range, 0u, static_cast<unsigned>(status_fd - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(status_fd + 1), ~0u, 0u);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(-1, &status, __WALL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ::_exit(0);
    if (r == child) {
      ssize_t n = ::write(status_fd, &status, sizeof(status));
      (void)n;
      ::_exit(0);
    }
  }
}

}  // namespace

Result<Restarted> restart_image(int fd, const std::string& name, const RestartOptions& opts) {
  image::ImageReader reader(fd, name);
  CRKIT_ASSIGN(LoadedImage img, load_metadata(reader));
  const auto& p = img.process;

  const bool root = ::getuid() == 0;
  const auto& c = p.creds;
  const uid_t me = ::getuid();
  if (!root && (c.uid != me || c.euid != me || c.suid != me || c.fsuid != me))
    return fail(
        EPERM, fmt::format(
                   "{}: the image belongs to uid {}; you (uid {}) may restart only your own images",
                   name, p.creds.uid, ::getuid()));

  resources::RestoreTarget t;
  t.vpid = p.pid;
  t.restarter_is_root = root;
  t.relocations = opts.relocations;
  CRKIT_TRY(resources::check_mapped_files(t, img.vmas));

  const bool can_choose_pids = have_cap(kCapCheckpointRestore) || have_cap(kCapSysAdmin);
  const bool can_make_pidns = have_cap(kCapSysAdmin);
  bool use_pidns = !opts.restore_pid || !can_choose_pids;
  if (use_pidns && !can_make_pidns) {
    log::info("restarting in a new user and PID namespace (no privilege to choose PIDs here)");
    CRKIT_TRY(enter_user_namespace());
  } else if (use_pidns) {
    log::info("restarting in a new PID namespace");
  }
  t.can_set_exe = true;  // PR_SET_MM_MAP falls back if the exe link cannot be changed

  int rp[2];
  if (::pipe2(rp, O_CLOEXEC) < 0) return fail_errno("creating the restorer's channel");
  UniqueFd report_r(rp[0]), report_w(rp[1]);
  UniqueFd status_r, status_w;
  StandinGuard guard;
  Restarted out;
  out.original_pid = p.pid;
  out.in_new_pidns = use_pidns;

  // Signals must not interrupt the transplant; cr_restart forwards them after release.
  ::fflush(nullptr);
  if (use_pidns) {
    int sp[2];
    if (::pipe2(sp, O_CLOEXEC) < 0) return fail_errno("creating the status channel");
    status_r.reset(sp[0]);
    status_w.reset(sp[1]);
    pid_t init = clone3_with(CLONE_NEWPID, 0);
    if (init < 0) return fail_errno("creating a PID namespace for the restart");
    if (init == 0) {
      report_r.reset();
      status_r.reset();
      nsinit_main(img, t, opts, report_w.release(), status_w.release());
    }
    guard.set(-1, init, init);
    out.child = init;
  } else {
    pid_t child = clone3_with(0, p.pid);
    if (child < 0) return fail(clone_error(errno, p.pid));
    if (child == 0) {
      report_r.reset();
      standin_main(img, t, opts, report_w.release());
    }
    guard.set(child, -1, child);
    out.child = child;
    t.real_pid = child;
  }
  report_w.reset();
  status_w.reset();

  CRKIT_ASSIGN(std::string msg, read_report(report_r.get()));
  int keep_fd = -1;
  CRKIT_TRY(parse_report(msg, &keep_fd));
  if (use_pidns) {
    CRKIT_ASSIGN(auto kids, proc::list_children(out.child));
    if (kids.size() != 1)
      return fail(EIO, "cannot find the stand-in process inside the new PID namespace");
    t.real_pid = kids.front();
    guard.set(t.real_pid, out.child, out.child);
  }
  t.real_tid_of[p.pid] = t.real_pid;

  // Take the stand-in over.
  // EXITKILL: should cr_restart die while it holds the stand-in, the stand-in dies too
  // (until the final detach, which makes the restored process independent of us).
  if (::ptrace(PTRACE_SEIZE, t.real_pid, 0,
               PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL) < 0)
    return fail_errno(fmt::format("attaching to the stand-in process {}", t.real_pid));
  if (::ptrace(PTRACE_INTERRUPT, t.real_pid, 0, 0) < 0)
    return fail_errno(fmt::format("stopping the stand-in process {}", t.real_pid));
  for (;;) {
    CRKIT_ASSIGN(auto s, inject::wait_thread(t.real_pid));
    if (s.kind == inject::StopInfo::EventStop) break;
    if (s.kind == inject::StopInfo::Exited) return fail(EIO, "the stand-in process died");
    ::ptrace(PTRACE_CONT, t.real_pid, 0, 0);
  }

  Status st = transplant(t, img, reader, std::move(img.first_pages), opts, keep_fd);
  if (!st) {
    // Killed while still traced: a detached half-built process would run (and crash).
    ::kill(t.real_pid, SIGKILL);
    return fail(st.error().context(fmt::format("restarting process {}", p.pid)));
  }
  // Release every thread together.
  for (auto& [v, real] : t.real_tid_of) ::ptrace(PTRACE_DETACH, real, 0, 0);
  if (p.was_stopped) ::kill(t.real_pid, SIGSTOP);
  if (use_pidns) ::kill(out.child, SIGUSR1);
  guard.release();
  out.restored = t.real_pid;
  out.status_fd = std::move(status_r);
  return out;
}

}  // namespace crkit::engine
