#include "resources/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/prctl.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "common/log.hpp"
#include "inject/ptrace_thread.hpp"
#include "proc/proc.hpp"

namespace crkit::resources {
namespace {

std::string strip_deleted(std::string s) {
  const std::string suffix = " (deleted)";
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0)
    s.resize(s.size() - suffix.size());
  return s;
}

}  // namespace

Result<image::ProcessRecord> dump_process(const DumpTarget& t) {
  image::ProcessRecord p;
  const pid_t pid = t.pid;
  CRKIT_ASSIGN(proc::Stat st, proc::read_stat(pid));
  CRKIT_ASSIGN(proc::Status status, proc::read_status(pid));
  p.pid = pid;
  p.ppid = st.ppid;
  p.pgid = st.pgrp;
  p.sid = st.session;
  p.exit_signal = static_cast<uint32_t>(st.exit_signal);
  CRKIT_ASSIGN(std::string comm, proc::read_file(fmt::format("/proc/{}/comm", pid)));
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  p.comm = comm;
  CRKIT_ASSIGN(p.cwd, proc::read_link(fmt::format("/proc/{}/cwd", pid)));
  CRKIT_ASSIGN(p.root, proc::read_link(fmt::format("/proc/{}/root", pid)));
  p.umask = status.umask;
  CRKIT_ASSIGN(std::string pers, proc::read_file(fmt::format("/proc/{}/personality", pid)));
  p.personality = static_cast<uint32_t>(std::stoul(pers, nullptr, 16));
  p.thread_count = static_cast<uint32_t>(t.tids.size());

  auto& c = p.creds;
  c.uid = status.uid[0], c.euid = status.uid[1], c.suid = status.uid[2], c.fsuid = status.uid[3];
  c.gid = status.gid[0], c.egid = status.gid[1], c.sgid = status.gid[2], c.fsgid = status.gid[3];
  c.groups = status.groups;
  c.cap_inh = status.cap_inh, c.cap_prm = status.cap_prm, c.cap_eff = status.cap_eff;
  c.cap_bnd = status.cap_bnd, c.cap_amb = status.cap_amb;

  // Asked of the process itself: reading another user's limits from outside would need
  // CAP_SYS_RESOURCE.
  for (int r = 0; r < RLIM_NLIMITS; ++r) {
    CRKIT_TRY(t.main->check(fmt::format("reading resource limit {} of process {}", r, pid),
                            SYS_prlimit64, {0, static_cast<uint64_t>(r), 0, t.scratch->addr()}));
    CRKIT_ASSIGN(auto rl, t.scratch->get_struct<image::RLimit>(0));
    p.rlimits.push_back(rl);
  }
  if (status.seccomp != 0)
    return fail(ENOTSUP,
                fmt::format("process {} runs under a seccomp filter (mode {}), which crkit "
                            "cannot restore: not checkpointed",
                            pid, status.seccomp));
  p.no_new_privs = status.no_new_privs ? 1 : 0;
  CRKIT_ASSIGN(long dumpable,
               t.main->check(fmt::format("reading the dumpable flag of process {}", pid), SYS_prctl,
                             {PR_GET_DUMPABLE}));
  p.dumpable = static_cast<uint32_t>(dumpable);
  CRKIT_TRY(t.main->check(fmt::format("reading the parent-death signal of process {}", pid),
                          SYS_prctl, {PR_GET_PDEATHSIG, t.scratch->addr()}));
  CRKIT_ASSIGN(int pdeath, t.scratch->get_struct<int>(0));
  p.pdeath_signal = static_cast<uint32_t>(pdeath);

  auto& mm = p.mm;
  mm.start_code = st.start_code, mm.end_code = st.end_code;
  mm.start_data = st.start_data, mm.end_data = st.end_data;
  mm.start_brk = st.start_brk, mm.start_stack = st.start_stack;
  mm.arg_start = st.arg_start, mm.arg_end = st.arg_end;
  mm.env_start = st.env_start, mm.env_end = st.env_end;
  CRKIT_ASSIGN(long brk, t.main->check(fmt::format("reading the program break of process {}", pid),
                                       SYS_brk, {0}));
  mm.brk = static_cast<uint64_t>(brk);
  CRKIT_ASSIGN(mm.auxv, proc::read_auxv(pid));
  CRKIT_ASSIGN(std::string exe, proc::read_link(fmt::format("/proc/{}/exe", pid)));
  mm.exe_path = strip_deleted(exe);
  struct stat est {};
  if (::stat(fmt::format("/proc/{}/exe", pid).c_str(), &est) == 0) mm.exe_id = file_identity(est);

  // Signal handlers: only the process can tell, so ask it (rt_sigaction(sig, NULL, &old)) —
  // for the signals it catches or ignores (SigCgt, SigIgn) and SIGCHLD, whose SA_NOCLDSTOP
  // and SA_NOCLDWAIT act even with SIG_DFL. Any other signal is at SIG_DFL, where flags and
  // mask have no effect; it is saved as SIG_DFL without them. Each question is an injected
  // system call made while the job is frozen: 62 of them were ~1 ms per process.
  const uint64_t asked = status.sig_cgt | status.sig_ign | (uint64_t{1} << (SIGCHLD - 1));
  for (int sig = 1; sig <= 64; ++sig) {
    image::SigAction sa;
    if (sig != SIGKILL && sig != SIGSTOP && (asked >> (sig - 1) & 1)) {
      CRKIT_TRY(
          t.main->check(fmt::format("reading the handler of signal {} of process {}", sig, pid),
                        SYS_rt_sigaction, {static_cast<uint64_t>(sig), 0, t.scratch->addr(), 8}));
      CRKIT_ASSIGN(sa, t.scratch->get_struct<image::SigAction>(0));
    }
    p.sigactions.push_back(sa);
  }
  for (int which = 0; which < 3; ++which) {
    CRKIT_TRY(t.main->check(fmt::format("reading interval timer {} of process {}", which, pid),
                            SYS_getitimer, {static_cast<uint64_t>(which), t.scratch->addr()}));
    CRKIT_ASSIGN(auto it, t.scratch->get_struct<image::ItimerVal>(0));
    p.itimers.push_back(it);
  }
  CRKIT_ASSIGN(auto shared, inject::peek_pending(pid, true));
  for (auto& s : shared) {
    image::SigInfo si;
    std::memcpy(si.raw.data(), s.data(), si.raw.size());
    p.shared_pending.push_back(si);
  }
  return p;
}

Status apply_process_attrs_in_standin(const image::ProcessRecord& p, const RestoreTarget& t) {
  std::string cwd = t.relocate(p.cwd);
  if (::chdir(cwd.c_str()) < 0)
    return fail_errno(fmt::format("restoring the working directory {}", cwd));
  ::umask(p.umask);
  if (::personality(p.personality) < 0)
    return fail_errno(fmt::format("restoring personality {:#x}", p.personality));
  // A cr_restart with file capabilities makes its children non-dumpable; the restorer must
  // be able to trace the stand-in. The saved value is set at the end (restore_dumpable).
  ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  return {};
}

namespace {

Status take_file_credentials(const image::Credentials& c) {
  std::vector<gid_t> groups(c.groups.begin(), c.groups.end());
  if (::setgroups(groups.size(), groups.data()) < 0)
    return fail_errno(fmt::format("taking on the supplementary groups of uid {}", c.uid));
  ::setfsgid(c.fsgid);
  ::setfsuid(c.fsuid);
  if (static_cast<uint32_t>(::setfsuid(static_cast<uid_t>(-1))) != c.fsuid)
    return fail(EPERM, fmt::format("cannot take on the file-system uid {}", c.fsuid));
  return {};
}

bool needs_file_credentials(const image::Credentials* c) {
  return c && ::getuid() == 0 && c->fsuid != 0;
}

}  // namespace

Status assume_file_credentials(const image::ProcessRecord& p) {
  // Root restarting a user's image opens that user's files with that user's rights.
  if (!needs_file_credentials(&p.creds)) return {};
  return take_file_credentials(p.creds);
}

Result<FileCredentials> FileCredentials::assume(const image::Credentials* c) {
  FileCredentials fc;
  if (!needs_file_credentials(c)) return fc;
  fc.old_fsuid_ = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1)));
  fc.old_fsgid_ = static_cast<gid_t>(::setfsgid(static_cast<gid_t>(-1)));
  int n = ::getgroups(0, nullptr);
  if (n < 0) return fail_errno("reading the supplementary groups");
  fc.old_groups_.resize(static_cast<size_t>(n));
  if (n > 0 && ::getgroups(n, fc.old_groups_.data()) < 0)
    return fail_errno("reading the supplementary groups");
  fc.active_ = true;  // from here on the destructor puts ours back, also on failure
  CRKIT_TRY(take_file_credentials(*c));
  return fc;
}

FileCredentials::FileCredentials(FileCredentials&& o) noexcept
    : active_(std::exchange(o.active_, false)),
      old_fsuid_(o.old_fsuid_),
      old_fsgid_(o.old_fsgid_),
      old_groups_(std::move(o.old_groups_)) {}

FileCredentials::~FileCredentials() {
  if (!active_) return;
  ::setfsuid(old_fsuid_);
  ::setfsgid(old_fsgid_);
  (void)::setgroups(old_groups_.size(), old_groups_.data());
}

Status restore_dumpable(RestoreTarget& t, const image::ProcessRecord& p) {
  CRKIT_TRY(t.main->check("restoring the dumpable flag", SYS_prctl, {PR_SET_DUMPABLE, p.dumpable}));
  return {};
}

Status restore_rlimits(RestoreTarget& t, const image::ProcessRecord& p) {
  for (size_t r = 0; r < p.rlimits.size() && r < RLIM_NLIMITS; ++r) {
    image::RLimit want = p.rlimits[r];
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put_struct(0, want));
    CRKIT_ASSIGN(long rc, t.main->call(SYS_prlimit64, {0, r, addr, 0}));
    if (rc == 0) continue;
    // Raising a hard limit needs privilege: keep the current one, never above the saved one.
    CRKIT_TRY(
        t.main->check(fmt::format("reading resource limit {}", r), SYS_prlimit64, {0, r, 0, addr}));
    CRKIT_ASSIGN(auto cur, t.scratch->get_struct<image::RLimit>(0));
    want.max = std::min(want.max, cur.max);
    want.cur = std::min(want.cur, want.max);
    CRKIT_TRY(t.scratch->put_struct(0, want));
    CRKIT_TRY(
        t.main->check(fmt::format("restoring resource limit {} ({}/{})", r, want.cur, want.max),
                      SYS_prlimit64, {0, r, addr, 0}));
  }
  return {};
}

Status restore_pdeath_signal(RestoreTarget& t, const image::ProcessRecord& p, bool orphan) {
  const uint64_t sig = orphan ? 0 : p.pdeath_signal;
  CRKIT_TRY(t.main->check("restoring the parent-death signal", SYS_prctl, {PR_SET_PDEATHSIG, sig}));
  return {};
}

Status restore_mm_layout(RestoreTarget& t, const image::ProcessRecord& p) {
  const auto& mm = p.mm;
  struct prctl_mm_map m {};
  m.start_code = mm.start_code, m.end_code = mm.end_code;
  m.start_data = mm.start_data, m.end_data = mm.end_data;
  m.start_brk = mm.start_brk, m.brk = mm.brk, m.start_stack = mm.start_stack;
  m.arg_start = mm.arg_start, m.arg_end = mm.arg_end;
  m.env_start = mm.env_start, m.env_end = mm.env_end;
  m.auxv_size = static_cast<uint32_t>(mm.auxv.size() * sizeof(uint64_t));
  m.exe_fd = static_cast<uint32_t>(-1);
  // Layout in the scratch area: [0, 256) the struct, [256, 4096) auxv, [4096, ...) exe path.
  CRKIT_ASSIGN(
      uint64_t auxv_addr,
      t.scratch->put(256, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(mm.auxv.data()),
                                                   m.auxv_size)));
  m.auxv = reinterpret_cast<__u64*>(auxv_addr);
  long exe_fd = -1;
  if (t.can_set_exe && !mm.exe_path.empty()) {
    std::string exe = t.relocate(mm.exe_path);
    CRKIT_ASSIGN(uint64_t path_addr, t.scratch->put_string(8192, exe));
    auto fd = t.main->call(SYS_openat,
                           {static_cast<uint64_t>(AT_FDCWD), path_addr, O_RDONLY | O_CLOEXEC, 0});
    if (fd && *fd >= 0) {
      exe_fd = *fd;
      m.exe_fd = static_cast<uint32_t>(exe_fd);
    } else {
      log::warn("cannot reopen executable {} for /proc/{}/exe; it will show cr_restart", exe,
                t.vpid);
    }
  }
  CRKIT_ASSIGN(uint64_t map_addr, t.scratch->put_struct(0, m));
  auto r = t.main->call(SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, map_addr, sizeof(m), 0});
  if (r && *r < 0 && exe_fd >= 0) {
    // Retry without changing the exe link (it needs CAP_CHECKPOINT_RESTORE).
    m.exe_fd = static_cast<uint32_t>(-1);
    CRKIT_TRY(t.scratch->put_struct(0, m));
    log::warn("/proc/{}/exe will show cr_restart: {}", t.vpid,
              std::strerror(static_cast<int>(-*r)));
    r = t.main->call(SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, map_addr, sizeof(m), 0});
  }
  if (exe_fd >= 0) (void)t.main->call(SYS_close, {static_cast<uint64_t>(exe_fd)});
  if (!r) return fail(r.error());
  if (*r < 0)
    return fail_sys(static_cast<int>(-*r),
                    fmt::format("restoring the memory layout (brk {:#x}, stack {:#x}, args, auxv) "
                                "with prctl(PR_SET_MM_MAP)",
                                mm.brk, mm.start_stack));
  return {};
}

Status restore_sigactions(RestoreTarget& t, const image::ProcessRecord& p) {
  for (size_t i = 0; i < p.sigactions.size(); ++i) {
    int sig = static_cast<int>(i) + 1;
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put_struct(0, p.sigactions[i]));
    CRKIT_TRY(t.main->check(fmt::format("restoring the handler of signal {}", sig),
                            SYS_rt_sigaction, {static_cast<uint64_t>(sig), addr, 0, 8}));
  }
  return {};
}

Status restore_itimers(RestoreTarget& t, const image::ProcessRecord& p) {
  for (size_t which = 0; which < p.itimers.size() && which < 3; ++which) {
    image::ItimerVal it = p.itimers[which];
    if (!it.value_sec && !it.value_usec) {
      // A periodic ITIMER_REAL that fired while the process was frozen reads as 0 until its
      // SIGALRM is dequeued (the kernel re-arms it then); re-arm it with its interval.
      if (!it.interval_sec && !it.interval_usec) continue;
      it.value_sec = it.interval_sec;
      it.value_usec = it.interval_usec;
    }
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put_struct(0, it));
    CRKIT_TRY(t.main->check(fmt::format("restoring interval timer {}", which), SYS_setitimer,
                            {static_cast<uint64_t>(which), addr, 0}));
  }
  return {};
}

Status restore_shared_pending(RestoreTarget& t, const image::ProcessRecord& p) {
  // rt_sigqueueinfo with a kernel-style si_code is only allowed towards oneself, which is
  // what a remote call made by the main thread is.
  for (const auto& si : p.shared_pending) {
    int sig = 0;
    std::memcpy(&sig, si.raw.data(), sizeof(sig));
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put(0, si.raw));
    CRKIT_TRY(t.main->check(fmt::format("re-queueing pending signal {}", sig), SYS_rt_sigqueueinfo,
                            {static_cast<uint64_t>(t.vpid), static_cast<uint64_t>(sig), addr}));
  }
  return {};
}

Status restore_comm(RestoreTarget& t, const image::ProcessRecord& p) {
  CRKIT_ASSIGN(uint64_t addr, t.scratch->put_string(0, p.comm.substr(0, 15)));
  CRKIT_TRY(t.main->check("restoring the process name", SYS_prctl, {PR_SET_NAME, addr}));
  return {};
}

}  // namespace crkit::resources
