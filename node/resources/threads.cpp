#include "resources/threads.hpp"

#include <linux/capability.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "common/log.hpp"
#include "inject/ptrace_thread.hpp"
#include "proc/proc.hpp"

namespace crkit::resources {
namespace {

constexpr int kRseqFlagUnregister = 1;

struct KernelStack {  // stack_t as the kernel sees it
  uint64_t sp;
  int32_t flags;
  int32_t pad;
  uint64_t size;
};

inject::RemoteCaller caller_for(const RestoreTarget& t, pid_t vtid) {
  return inject::RemoteCaller(t.real_tid_of.at(vtid), t.site);
}

}  // namespace

Result<std::vector<image::ThreadRecord>> dump_threads(
    const DumpTarget& t, const std::map<pid_t, std::vector<std::vector<uint8_t>>>& stashed) {
  std::vector<image::ThreadRecord> out;
  for (pid_t tid : t.tids) {
    image::ThreadRecord th;
    th.pid = t.pid;
    th.tid = tid;
    CRKIT_ASSIGN(inject::Regs regs, inject::get_regs(tid));
    th.gpregs.assign(reinterpret_cast<uint8_t*>(&regs),
                     reinterpret_cast<uint8_t*>(&regs) + sizeof(regs));
    CRKIT_ASSIGN(th.xstate, inject::get_xstate(tid));
    CRKIT_ASSIGN(th.sigmask, inject::get_sigmask(tid));
    CRKIT_ASSIGN(auto pending, inject::peek_pending(tid, false));
    if (auto it = stashed.find(tid); it != stashed.end())
      pending.insert(pending.end(), it->second.begin(), it->second.end());
    for (auto& p : pending) {
      image::SigInfo si;
      std::memcpy(si.raw.data(), p.data(), si.raw.size());
      th.pending.push_back(si);
    }
    inject::RemoteCaller rc(tid, t.site);
    CRKIT_TRY(rc.check(fmt::format("reading the signal stack of thread {}", tid), SYS_sigaltstack,
                       {0, t.scratch->addr()}));
    CRKIT_ASSIGN(auto ss, t.scratch->get_struct<KernelStack>(0));
    th.altstack_sp = ss.sp, th.altstack_size = ss.size,
    th.altstack_flags = static_cast<uint32_t>(ss.flags);
    CRKIT_TRY(rc.check(fmt::format("reading the clear-tid address of thread {}", tid), SYS_prctl,
                       {PR_GET_TID_ADDRESS, t.scratch->addr()}));
    CRKIT_ASSIGN(th.clear_child_tid, t.scratch->get_struct<uint64_t>(0));
    uint64_t head = 0;
    size_t len = 0;
    if (::syscall(SYS_get_robust_list, tid, &head, &len) < 0)
      return fail_errno(fmt::format("reading the robust futex list of thread {}", tid));
    th.robust_list = head, th.robust_list_len = len;
    CRKIT_ASSIGN(auto rseq, inject::get_rseq(tid));
    th.rseq_addr = rseq.addr, th.rseq_len = rseq.len, th.rseq_sig = rseq.sig;
    auto comm = proc::read_file(fmt::format("/proc/{}/task/{}/comm", t.pid, tid));
    if (comm) {
      th.comm = *comm;
      while (!th.comm.empty() && th.comm.back() == '\n') th.comm.pop_back();
    }
    out.push_back(std::move(th));
  }
  return out;
}

Status unregister_standin_rseq(RestoreTarget& t) {
  CRKIT_ASSIGN(auto rseq, inject::get_rseq(t.real_pid));
  if (!rseq.addr) return {};
  CRKIT_TRY(t.main->check("unregistering the stand-in's rseq area", SYS_rseq,
                          {rseq.addr, rseq.len, kRseqFlagUnregister, rseq.sig}));
  return {};
}

Status create_threads(RestoreTarget& t, const std::vector<image::ThreadRecord>& threads) {
  for (const auto& th : threads) {
    if (th.tid == t.vpid) continue;
    struct clone_args ca {};
    ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    ca.exit_signal = 0;
    pid_t want = th.tid;
    CRKIT_ASSIGN(uint64_t tid_addr, t.scratch->put_struct(512, want));
    ca.set_tid = tid_addr;
    ca.set_tid_size = 1;
    CRKIT_ASSIGN(uint64_t ca_addr, t.scratch->put_struct(0, ca));
    t.main->clear_new_threads();
    auto r = t.main->call(SYS_clone3, {ca_addr, sizeof(ca)});
    if (!r) return fail(r.error());
    if (*r < 0) {
      int e = static_cast<int>(-*r);
      return fail_sys(e == EEXIST ? EBUSY : e,
                      fmt::format("creating thread {} with its original id", th.tid));
    }
    if (t.main->new_threads().empty())
      return fail(EIO,
                  fmt::format("thread {} was created but not reported to the restorer", th.tid));
    pid_t real = t.main->new_threads().front();
    // The new thread starts in a ptrace stop (auto-attached); collect that stop.
    for (;;) {
      CRKIT_ASSIGN(auto s, inject::wait_thread(real));
      if (s.kind == inject::StopInfo::EventStop) break;
      if (s.kind == inject::StopInfo::Exited)
        return fail(ESRCH, fmt::format("restored thread {} exited at once", th.tid));
    }
    t.real_tid_of[th.tid] = real;
    log::debug("created thread {} (real {})", th.tid, real);
  }
  return {};
}

Status restore_thread_state(RestoreTarget& t, const image::ThreadRecord& th) {
  inject::RemoteCaller rc = caller_for(t, th.tid);
  const std::string who = fmt::format("thread {}", th.tid);
  CRKIT_TRY(rc.check("restoring the clear-tid address of " + who, SYS_set_tid_address,
                     {th.clear_child_tid}));
  // Always set, even when the original had none: the stand-in's own values (inherited from
  // cr_restart, e.g. a sanitizer's alternate signal stack) must not survive into the process.
  CRKIT_TRY(rc.check("restoring the robust futex list of " + who, SYS_set_robust_list,
                     {th.robust_list, th.robust_list_len ? th.robust_list_len : 24}));
  if (th.rseq_addr)
    CRKIT_TRY(rc.check("re-registering the rseq area of " + who, SYS_rseq,
                       {th.rseq_addr, th.rseq_len, 0, th.rseq_sig}));
  KernelStack ss{th.altstack_sp, static_cast<int32_t>(th.altstack_flags & ~SS_ONSTACK), 0,
                 th.altstack_size};
  if (th.altstack_flags & SS_DISABLE) ss = KernelStack{0, SS_DISABLE, 0, 0};
  CRKIT_ASSIGN(uint64_t ss_addr, t.scratch->put_struct(0, ss));
  CRKIT_TRY(rc.check("restoring the signal stack of " + who, SYS_sigaltstack, {ss_addr, 0}));
  if (!th.comm.empty()) {
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put_string(0, th.comm.substr(0, 15)));
    CRKIT_TRY(rc.check("restoring the name of " + who, SYS_prctl, {PR_SET_NAME, addr}));
  }
  for (const auto& si : th.pending) {
    int sig = 0;
    std::memcpy(&sig, si.raw.data(), sizeof(sig));
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put(0, si.raw));
    CRKIT_TRY(rc.check(fmt::format("re-queueing pending signal {} of {}", sig, who),
                       SYS_rt_tgsigqueueinfo,
                       {static_cast<uint64_t>(t.vpid), static_cast<uint64_t>(th.tid),
                        static_cast<uint64_t>(sig), addr}));
  }
  return {};
}

Status restore_thread_creds(RestoreTarget& t, const image::ThreadRecord& th,
                            const image::ProcessRecord& p) {
  const image::Credentials& c = p.creds;
  inject::RemoteCaller rc = caller_for(t, th.tid);
  pid_t real = t.real_tid_of.at(th.tid);
  CRKIT_ASSIGN(proc::Status cur, proc::read_task_status(t.real_pid, real));
  const std::string who = fmt::format("thread {}", th.tid);
  // The bounding set first: dropping needs CAP_SETPCAP, which a change of uid takes away.
  constexpr uint64_t kCapSetPcap = 8;
  for (uint64_t cap = 0; cap < 64; ++cap) {
    if (!(cur.cap_bnd >> cap & 1) || (c.cap_bnd >> cap & 1)) continue;
    if (!(cur.cap_eff >> kCapSetPcap & 1)) {
      log::warn("cannot narrow the capability bounding set of {} (no CAP_SETPCAP)", who);
      break;
    }
    CRKIT_TRY(rc.check(fmt::format("dropping capability {} from the bounding set of {}", cap, who),
                       SYS_prctl, {PR_CAPBSET_DROP, cap}));
  }
  bool ids_differ = cur.uid[0] != c.uid || cur.uid[1] != c.euid || cur.uid[2] != c.suid ||
                    cur.gid[0] != c.gid || cur.gid[1] != c.egid || cur.gid[2] != c.sgid;
  if (ids_differ) {
    // Only a privileged restarter gets here (an unprivileged one restores its own images).
    std::vector<uint32_t> groups = c.groups;
    CRKIT_ASSIGN(
        uint64_t gaddr,
        t.scratch->put(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(groups.data()),
                                                   groups.size() * 4)));
    CRKIT_TRY(rc.check("restoring the supplementary groups of " + who, SYS_setgroups,
                       {groups.size(), gaddr}));
    CRKIT_TRY(
        rc.check("restoring the group ids of " + who, SYS_setresgid, {c.gid, c.egid, c.sgid}));
    CRKIT_TRY(rc.check("restoring the user ids of " + who, SYS_setresuid, {c.uid, c.euid, c.suid}));
    CRKIT_ASSIGN(cur, proc::read_task_status(t.real_pid, real));
  }
  // Capabilities: the saved ones, limited to what the restarter holds; a restarter that is
  // not root (a capable or namespaced cr_restart) gives none at all.
  uint64_t want_prm = t.restarter_is_root ? c.cap_prm : 0;
  uint64_t want_inh = t.restarter_is_root ? c.cap_inh : 0;
  uint64_t prm = want_prm & cur.cap_prm, eff = c.cap_eff & prm, inh = want_inh & cur.cap_inh;
  if (prm != cur.cap_prm || eff != cur.cap_eff || inh != cur.cap_inh) {
    struct {
      __user_cap_header_struct hdr;
      __user_cap_data_struct data[2];
    } caps{};
    caps.hdr.version = _LINUX_CAPABILITY_VERSION_3;
    caps.hdr.pid = 0;
    caps.data[0] = {static_cast<uint32_t>(eff), static_cast<uint32_t>(prm),
                    static_cast<uint32_t>(inh)};
    caps.data[1] = {static_cast<uint32_t>(eff >> 32), static_cast<uint32_t>(prm >> 32),
                    static_cast<uint32_t>(inh >> 32)};
    CRKIT_ASSIGN(uint64_t addr, t.scratch->put_struct(0, caps));
    CRKIT_TRY(rc.check("restoring the capabilities of " + who, SYS_capset,
                       {addr, addr + sizeof(caps.hdr)}));
  }
  if (p.no_new_privs)
    CRKIT_TRY(
        rc.check("restoring no_new_privs of " + who, SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0}));
  return {};
}

Status restore_thread_registers(RestoreTarget& t, const image::ThreadRecord& th) {
  pid_t real = t.real_tid_of.at(th.tid);
  if (th.gpregs.size() != sizeof(inject::Regs))
    return fail(EINVAL, fmt::format("thread {}: register record has {} bytes, expected {}", th.tid,
                                    th.gpregs.size(), sizeof(inject::Regs)));
  inject::Regs regs{};
  std::memcpy(&regs, th.gpregs.data(), sizeof(regs));
  CRKIT_TRY(inject::set_xstate(real, th.xstate));
  CRKIT_TRY(inject::set_regs(real, inject::regs_for_resume(regs)));
  CRKIT_TRY(inject::set_sigmask(real, th.sigmask));
  return {};
}

}  // namespace crkit::resources
