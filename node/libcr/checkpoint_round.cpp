// One checkpoint request inside the process ("round"): CR_SIGNUM brings it; once no critical
// section is held, thread-context callbacks run on libcr's callback thread until each reaches
// cr_checkpoint(); then every cr_init() thread runs its signal-context callbacks in its signal
// handler, last registered first; when all have arrived the process replies to the requester
// through the control block and waits for the outcome (continue, restarted, failed); the
// callbacks return and the round ends. Everything here is async-signal-safe.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>

#include "libcr/core.hpp"

namespace crkit::libcr {
namespace {

constexpr long kLivenessCheckMs = 1000;

struct linux_dirent64 {  // getdents64(2); opendir() is not async-signal-safe
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};
constexpr int kRequesterQuietChecks = 10;  // seconds without a heartbeat

int hold_of(const ThreadRec* rec) {
  if (!rec) return g.hold_uninit;
  return rec->hold == CR_HOLD_DFLT ? g.hold_init : rec->hold;
}

// The requester that holds the block is gone (killed): no outcome will come. Its pid may
// not be visible from here (PID namespaces), so it must also have stopped its heartbeat.
bool requester_gone(uint32_t* last_beat, int* quiet_checks) {
  uint32_t beat = load(&g.cb->heartbeat);
  if (beat != *last_beat) {
    *last_beat = beat;
    *quiet_checks = 0;
    return false;
  }
  // Its pid proves nothing (a zombie, reused, or in another PID namespace): only the
  // heartbeat counts. It beats while it waits; while it dumps, we are frozen.
  return ++*quiet_checks >= kRequesterQuietChecks;
}

void merge_flags(int flags) {
  int abort = flags & CR_CHECKPOINT_ABORT_MASK;
  if (!abort) return;
  __atomic_fetch_or(&g.round.flags, abort, __ATOMIC_ACQ_REL);
  int code = (flags >> 16) & 0xffff;
  if (code && (abort & (CR_CHECKPOINT_TEMP_FAILURE | CR_CHECKPOINT_PERM_FAILURE)))
    cas(&g.round.code, 0, code);
}

void reply(uint32_t seq) {
  ControlBlock* cb = g.cb;
  int f = load(&g.round.flags);
  int32_t code = kReplyReady;
  if (f & CR_CHECKPOINT_PERM_FAILURE)
    code = kReplyPermFail;
  else if (f & CR_CHECKPOINT_TEMP_FAILURE)
    code = kReplyTempFail;
  else if (f & CR_CHECKPOINT_OMIT)
    code = kReplyOmit;
  cb->reply_code = code;
  cb->reply_value = load(&g.round.code);
  store(&cb->reply_seq, seq);
  futex_wake(&cb->reply_seq, true);
}

// After a restart: this process's pid and thread ids may be new ones.
void refresh_after_restart() {
  g.pid = sys_getpid();
  g.cb->pid = g.pid;
  store(&g.cb->claim, uint64_t{0});
}

void reap_exited(uint32_t seq);

// Waits for the requester's decision on request seq; returns what cr_checkpoint() returns.
int wait_outcome(uint32_t seq) {
  ControlBlock* cb = g.cb;
  uint32_t beat = load(&cb->heartbeat);
  int quiet = 0;
  for (;;) {
    uint32_t o = load(&cb->outcome_seq);
    if (o == seq) break;
    // A later request's outcome: ours was abandoned (its requester gave up on it).
    if (o && static_cast<int32_t>(o - seq) > 0) return -CR_ETEMPFAIL;
    if (futex_wait(&cb->outcome_seq, o, kLivenessCheckMs, true) == 0 || errno != ETIMEDOUT)
      continue;
    reap_exited(seq);
    if (load(&cb->outcome_seq) != seq && requester_gone(&beat, &quiet)) {
      // Nobody will answer: the checkpoint did not happen.
      if (cas(&cb->outcome_seq, o, seq)) {  // unless an outcome came meanwhile
        cb->outcome_code = kOutcomeFailed;
        cb->outcome_value = CR_ETEMPFAIL;
        futex_wake(&cb->outcome_seq, true);
      }
    }
  }
  ThreadRec* rec = self_rec();
  switch (load(&cb->outcome_code)) {
    case kOutcomeContinue:
      return 0;
    case kOutcomeRestarted:
      if (cas(&g.round.handles_redone, 0u, seq)) restarted_handles();
      if (rec) rec->tid = sys_gettid();
      if (sys_getpid() != g.pid) refresh_after_restart();
      return cb->restart_requester > 0 ? cb->restart_requester : 1;
    case kOutcomeOmitted:
      return -CR_EOMITTED;
    default: {
      int v = cb->outcome_value;
      return -(v > 0 ? v : CR_ETEMPFAIL);
    }
  }
}

void run_hook(int base_event, int result) {
  // base_event: CR_HOOK_CONT_*; the restart hooks are 3 further.
  if (result < 0) return;
  int ev = base_event + (result > 0 ? 3 : 0);
  cr_hook_fn_t fn = __atomic_load_n(&g.hooks[ev], __ATOMIC_ACQUIRE);
  if (fn) fn(static_cast<cr_hook_event_t>(ev));
}

// The round ends when every participant has finished its callbacks.
void finish_round(uint32_t seq);

void depart(uint32_t seq) {
  if (add(&g.round.departures, -1) == 0) finish_round(seq);
}

// A participant reaches the bottom of its callbacks (or has none).
int arrive_and_wait(uint32_t seq, int flags, bool wait) {
  merge_flags(flags);
  if (add(&g.round.arrivals, -1) == 0) reply(seq);
  if (!wait) return 0;
  return wait_outcome(seq);
}

int signal_bottom(Chain& c, int flags) {
  int r = arrive_and_wait(c.seq, flags, true);
  g.round.rinfo.requester = g.cb->restart_requester;
  return r;
}

// Sends the signal-context phase of request seq to thread tid; false if it is gone.
bool signal_thread(uint32_t seq, pid_t tid) {
  int slot = add(&g.round.n_signaled, 1) - 1;
  if (slot >= kMaxThreads) return false;
  store(&g.round.signaled[slot], tid);
  siginfo_t si;
  memset(&si, 0, sizeof si);
  si.si_signo = kSignal;
  si.si_code = SI_QUEUE;
  si.si_pid = g.pid;
  si.si_uid = ::getuid();
  si.si_value.sival_int = -static_cast<int>(load(&g.round.phase_token));
  (void)seq;
  add(&g.round.arrivals, 1);
  add(&g.round.departures, 1);
  if (::syscall(SYS_rt_tgsigqueueinfo, g.pid, tid, kSignal, &si) == 0) return true;
  if (cas(&g.round.signaled[slot], tid, 0)) {  // it exited meanwhile
    add(&g.round.arrivals, -1);
    add(&g.round.departures, -1);
  }
  return false;
}

// A thread takes its part of the signal phase (false: it was given up as exited).
bool claim_signaled(pid_t tid) {
  int n = load(&g.round.n_signaled);
  for (int i = 0; i < n && i < kMaxThreads; ++i)
    if (load(&g.round.signaled[i]) == tid) return cas(&g.round.signaled[i], tid, 0);
  return false;
}

// Threads that exited before they took the signal would never arrive: count them out.
void reap_exited(uint32_t seq) {
  int n = load(&g.round.n_signaled);
  for (int i = 0; i < n && i < kMaxThreads; ++i) {
    pid_t tid = load(&g.round.signaled[i]);
    if (tid <= 0 || ::syscall(SYS_tgkill, g.pid, tid, 0) == 0 || errno != ESRCH) continue;
    if (!cas(&g.round.signaled[i], tid, 0)) continue;
    if (add(&g.round.arrivals, -1) == 0) reply(seq);
    depart(seq);
  }
}

bool registered(pid_t tid) {
  for (int i = 0; i < kMaxThreads; ++i) {
    ThreadRec* t = __atomic_load_n(&g.threads[i], __ATOMIC_ACQUIRE);
    if (t && load(&t->in_use) && t->tid == tid) return true;
  }
  return false;
}

// Whether thread tid blocks CR_SIGNUM ("SigBlk:" of /proc/self/task/TID/status). Such a
// thread (glibc's own helper threads block everything) would never answer.
bool blocks_signal(pid_t tid) {
  char path[64] = "/proc/self/task/";
  char digits[16];
  int n = 0;
  for (pid_t t = tid; t > 0 && n < 15; t /= 10) digits[n++] = static_cast<char>('0' + t % 10);
  size_t len = strlen(path);
  while (n > 0) path[len++] = digits[--n];
  memcpy(path + len, "/status", 8);
  int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return true;
  char buf[2048];
  long got = ::syscall(SYS_read, fd, buf, sizeof buf - 1);
  ::syscall(SYS_close, fd);
  if (got <= 0) return true;
  buf[got] = 0;
  const char* p = strstr(buf, "SigBlk:");
  if (!p) return true;
  p += 7;
  while (*p == ' ' || *p == '\t') ++p;
  uint64_t mask = 0;
  for (; *p; ++p) {
    int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
    if (d < 0) break;
    mask = mask << 4 | static_cast<uint64_t>(d);
  }
  return (mask >> (kSignal - 1)) & 1;
}

// Signals every other thread: cr_init() threads run their signal-context callbacks; the
// others run the NO_CALLBACKS hook and are held as cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT) says.
void start_signal_phase(uint32_t seq, pid_t me) {
  for (int i = 0; i < kMaxThreads; ++i) {
    ThreadRec* t = __atomic_load_n(&g.threads[i], __ATOMIC_ACQUIRE);
    if (!t || !load(&t->in_use) || t->tid == me || t->is_callback_thread) continue;
    signal_thread(seq, t->tid);
  }
  int dir = static_cast<int>(
      ::syscall(SYS_openat, AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir < 0) return;
  alignas(8) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<struct linux_dirent64*>(buf + off);
      off += d->d_reclen;
      pid_t tid = 0;
      for (const char* c = d->d_name; *c >= '0' && *c <= '9'; ++c) tid = tid * 10 + (*c - '0');
      if (tid <= 0 || tid == me || tid == load(&g.tc_tid) || registered(tid)) continue;
      if (!blocks_signal(tid)) signal_thread(seq, tid);
    }
  }
  ::syscall(SYS_close, dir);
}

// This thread's signal-context callbacks, last registered first, then its hook.
int run_signal_callbacks(ThreadRec* rec, uint32_t seq) {
  Chain c{rec->sig_cbs, rec->n_sig_cbs, false, nullptr, seq, signal_bottom};
  rec->chain = &c;
  int r = run_chain(c, c.n - 1);
  rec->chain = nullptr;
  run_hook(CR_HOOK_CONT_SIGNAL_CONTEXT, r);
  return r;
}

// What the driver does once thread-context callbacks (if any) have reached cr_checkpoint():
// the signal-context phase, its own callbacks, the reply.
int driver_bottom(Chain& c, int flags) {
  merge_flags(flags);
  ThreadRec* rec = self_rec();
  bool abort = (load(&g.round.flags) & CR_CHECKPOINT_ABORT_MASK) != 0;
  if (!abort) start_signal_phase(c.seq, sys_gettid());
  if (!abort && rec && !rec->is_callback_thread && rec->n_sig_cbs > 0 && !rec->chain)
    return run_signal_callbacks(rec, c.seq);
  return arrive_and_wait(c.seq, 0, true);
}

void load_request_info(uint32_t seq) {
  ControlBlock* cb = g.cb;
  Round& r = g.round;
  r.info.signal = cb->req_signal;
  r.info.requester = cb->req_requester;
  r.info.target = cb->req_target;
  r.info.scope = static_cast<cr_scope_t>(cb->req_scope);
  memcpy(r.dest, cb->req_dest, sizeof r.dest);
  r.dest[sizeof r.dest - 1] = 0;
  r.info.dest = r.dest;
  r.rinfo.requester = 0;
  r.rinfo.src = r.src;
  r.flags = 0;
  r.code = 0;
  r.n_signaled = 0;
  uint32_t token = 0;
  while (token == 0) {  // 31 random bits (getrandom is a plain system call)
    if (::syscall(SYS_getrandom, &token, sizeof token, 0) != sizeof token)
      token = seq * 2654435761u;
    token &= 0x7fffffff;
  }
  store(&r.phase_token, token);
  r.arrivals = 1;  // the driver's own arrival; other participants add theirs
  r.departures = 1;
  cb->n_forwards = 0;
}

// Runs request seq from the thread that drives it (the callback thread, the thread that got
// the signal, or the one that left the last critical section).
void drive(uint32_t seq) {
  ThreadRec* me = self_rec();
  if (me && me->is_callback_thread)  // its own thread: it may wait for the sections
    while (uint32_t n = load(&g.cs_count)) futex_wait(&g.cs_count, n, -1, false);
  load_request_info(seq);
  store(&g.round.state, static_cast<uint32_t>(CR_STATE_ACTIVE));
  int result;
  if (me && me->is_callback_thread && g.n_tc_cbs > 0) {
    Chain c{g.tc_cbs, g.n_tc_cbs, true, nullptr, seq, driver_bottom};
    me->chain = &c;
    result = run_chain(c, c.n - 1);
    me->chain = nullptr;
    run_hook(CR_HOOK_CONT_THREAD_CONTEXT, result);
  } else {
    Chain c{nullptr, 0, false, nullptr, seq, driver_bottom};
    result = driver_bottom(c, 0);
    if (!me || me->n_sig_cbs == 0 || me->is_callback_thread)
      run_hook(CR_HOOK_CONT_NO_CALLBACKS, result);
  }
  depart(seq);
}

void finish_round(uint32_t seq) {
  if (load(&g.cb->outcome_code) == kOutcomeRestarted && cas(&g.round.handles_redone, 0u, seq))
    restarted_handles();
  store(&g.round.handles_redone, 0u);
  // Idle before "done": whoever waits for done (a self-request) finds the round over.
  store(&g.round.seq, 0u);
  store(&g.round.state, static_cast<uint32_t>(CR_STATE_IDLE));
  uint32_t next = __atomic_exchange_n(&g.round.queued, 0u, __ATOMIC_SEQ_CST);
  futex_wake(&g.round.state, false);
  store(&g.cb->done_seq, seq);
  futex_wake(&g.cb->done_seq, true);
  if (next) on_request_signal(next);
}

}  // namespace

int run_chain(Chain& c, int from) {
  int i = from;
  while (i >= 0 && !c.cbs[i].fn) --i;
  if (i < 0) return c.bottom(c, 0);
  Level lv{i, false, false, 0, c.top};
  c.top = &lv;
  int rc = c.cbs[i].fn(c.cbs[i].arg);
  if (!lv.called) {
    // BLCR: a callback that returns without calling cr_checkpoint() gets it called for it;
    // a non-zero return value is a permanent failure.
    lv.called = true;
    lv.result = rc == 0 ? run_chain(c, i - 1) : c.bottom(c, CR_CHECKPOINT_PERM_FAILURE);
    lv.returned = true;
  }
  c.top = lv.prev;
  return lv.result;
}

void on_request_signal(uint32_t seq) {
  if (!cas(&g.round.seq, 0u, seq)) {
    if (load(&g.round.seq) != seq) store(&g.round.queued, seq);
    return;
  }
  store(&g.round.last_started, seq);
  store(&g.round.state, static_cast<uint32_t>(CR_STATE_PENDING));
  if (load(&g.tc_tid) > 0) {  // the callback thread drives; this thread goes on
    store(&g.tc_go, seq);
    futex_wake(&g.tc_go, false);
    return;
  }
  ThreadRec* rec = self_rec();
  if (rec && rec->chain) {  // (inside a callback: the next section's leaver drives)
    __atomic_store_n(&g.round.driver_needed, seq, __ATOMIC_SEQ_CST);
    return;
  }
  drive_if_free(seq);
}

// A thread other than the callback thread never waits for critical sections (the holder
// may be itself, interrupted, or blocked on it): if one is held, whoever brings the count to
// zero drives. Sequentially consistent against cr_tryenter_cs's increment-then-check.
bool drive_if_free(uint32_t seq) {
  __atomic_store_n(&g.round.driver_needed, seq, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g.cs_count, __ATOMIC_SEQ_CST) != 0) return false;
  if (!cas(&g.round.driver_needed, seq, 0u)) return false;  // someone else drives
  drive(seq);
  return true;
}

void sections_left() {
  uint32_t seq = __atomic_load_n(&g.round.driver_needed, __ATOMIC_SEQ_CST);
  if (seq && cas(&g.round.driver_needed, seq, 0u)) drive(seq);
}

void on_phase_signal(uint32_t seq) {
  ThreadRec* rec = self_rec();
  if (load(&g.round.seq) != seq || (rec && rec->chain)) return;
  if (!claim_signaled(sys_gettid())) return;
  if (rec && rec->n_sig_cbs > 0) {
    run_signal_callbacks(rec, seq);
  } else {
    bool held = hold_of(rec) != CR_HOLD_NONE;
    int r = arrive_and_wait(seq, 0, held);
    if (held) run_hook(CR_HOOK_CONT_NO_CALLBACKS, r);
  }
  depart(seq);
}

void leave_cs_hook(ThreadRec* rec) {
  uint32_t seq = load(&g.round.driver_needed);
  if (seq && !rec->chain && load(&g.cs_count) == 0 && cas(&g.round.driver_needed, seq, 0u)) {
    drive(seq);
    return;
  }
  // BLCR: leaving the last section runs a pending checkpoint before returning.
  if (!rec->chain && load(&g.cs_count) == 0)
    while (uint32_t s = load(&g.round.state)) {
      if (s == CR_STATE_IDLE) break;
      futex_wait(&g.round.state, s, 100, false);
    }
}

void* callback_thread_main(void*) {
  sigset_t all;
  sigfillset(&all);
  real_sigprocmask(SIG_SETMASK, &all, nullptr);
  ThreadRec* rec = self_rec();
  if (rec) rec->is_callback_thread = true;
  store(&g.tc_tid, sys_gettid());
  for (;;) {
    uint32_t seq = load(&g.tc_go);
    if (!seq) {
      futex_wait(&g.tc_go, 0, -1, false);
      continue;
    }
    store(&g.tc_go, 0u);
    drive(seq);
  }
  return nullptr;
}

}  // namespace crkit::libcr

using namespace crkit::libcr;

extern "C" {

CR_EXPORT int cr_checkpoint(int flags) {
  ThreadRec* rec = self_rec();
  Chain* c = rec ? rec->chain : nullptr;
  if (!c || !c->top || c->top->called) return -CR_ENOTCB;
  Level* lv = c->top;
  lv->called = true;
  if (flags & CR_CHECKPOINT_ABORT_MASK)
    lv->result = c->bottom(*c, flags);
  else
    lv->result = run_chain(*c, lv->index - 1);
  c->top = lv;  // (run_chain restored it; make it explicit)
  lv->returned = true;
  return lv->result;
}

CR_EXPORT int cr_replace_self(cr_callback_t fn, void* arg, int flags) {
  ThreadRec* rec = self_rec();
  Chain* c = rec ? rec->chain : nullptr;
  if (!c || !c->top || !c->cbs) return fail_errno(CR_ENOTCB);
  int ctx = flags & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT);
  if (ctx != (c->thread_context ? CR_THREAD_CONTEXT : CR_SIGNAL_CONTEXT) ||
      (flags & ~(CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT)))
    return fail_errno(EINVAL);
  Callback& cb = c->cbs[c->top->index];
  __atomic_store_n(&cb.arg, arg, __ATOMIC_RELEASE);
  __atomic_store_n(&cb.fn, fn, __ATOMIC_RELEASE);
  return 0;
}

CR_EXPORT const struct cr_checkpoint_info* cr_get_checkpoint_info(void) {
  ThreadRec* rec = self_rec();
  Chain* c = rec ? rec->chain : nullptr;
  if (!c || !c->top || c->top->called) {
    errno = CR_ENOTCB;
    return nullptr;
  }
  return &g.round.info;
}

CR_EXPORT const struct cr_restart_info* cr_get_restart_info(void) {
  ThreadRec* rec = self_rec();
  Chain* c = rec ? rec->chain : nullptr;
  if (!c || !c->top || !c->top->returned || c->top->result <= 0) {
    errno = CR_ENOTCB;
    return nullptr;
  }
  Round& r = g.round;
  r.rinfo.requester = g.cb->restart_requester;
  memcpy(r.src, g.cb->restart_src, sizeof r.src);
  r.src[sizeof r.src - 1] = 0;
  r.rinfo.src = r.src;
  return &r.rinfo;
}

CR_EXPORT int cr_forward_checkpoint(cr_scope_t scope, pid_t target) {
  ThreadRec* rec = self_rec();
  Chain* c = rec ? rec->chain : nullptr;
  if (!c || !c->top || c->top->called) return fail_errno(CR_ENOTCB);
  if (scope < CR_SCOPE_PROC || scope > CR_SCOPE_TREE || target < 0) return fail_errno(EINVAL);
  pid_t id = target;
  if (id == 0)
    id = scope == CR_SCOPE_PGRP ? ::getpgrp() : scope == CR_SCOPE_SESS ? ::getsid(0) : g.pid;
  long k = ::syscall(SYS_kill, scope == CR_SCOPE_PGRP ? -id : id, 0);
  if (k < 0 && errno == ESRCH && scope == CR_SCOPE_SESS) k = 0;  // a session without its leader
  if (k < 0) return -1;
  ControlBlock* cb = g.cb;
  for (;;) {
    uint32_t n = load(&cb->n_forwards);
    if (n >= static_cast<uint32_t>(kMaxForwards)) return fail_errno(EBUSY);
    if (cas(&cb->n_forwards, n, n + 1)) {
      cb->forwards[n].scope = scope;
      cb->forwards[n].pid = id;
      return 0;
    }
  }
}

}  // extern "C"
