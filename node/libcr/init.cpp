// Loading libcr.so (an ELF constructor): the control block, the CR_SIGNUM handler, fork
// handling; cr_init() and the per-thread records; callback registration; hooks, holds and
// persistence counts.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "libcr/core.hpp"

namespace crkit::libcr {
namespace {

__thread ThreadRec* tls_rec __attribute__((tls_model("initial-exec")));
pthread_key_t g_exit_key;

void thread_exit(void* p) {
  auto* rec = static_cast<ThreadRec*>(p);
  if (!rec) return;
  tls_rec = nullptr;
  rec->tid = 0;
  store(&rec->in_use, 0u);  // the slot keeps it for the next cr_init() thread
}

void handler(int sig, siginfo_t* si, void* uctx) {
  int saved = errno;
  // Requests carry their sequence number; only someone who can write the control block (a
  // requester that may ptrace us) can make one that matches it.
  if (si && si->si_code == SI_QUEUE && g.cb) {
    int v = si->si_value.sival_int;
    if (v > 0 && static_cast<uint32_t>(v) == load(&g.cb->req_seq) &&
        static_cast<uint32_t>(v) != load(&g.round.last_started) &&
        load(&g.cb->outcome_seq) != static_cast<uint32_t>(v)) {
      on_request_signal(static_cast<uint32_t>(v));
      errno = saved;
      return;
    }
  }
  // The signal phase comes from this process itself, carrying the round's random token
  // (kept out of the shared block: another process cannot guess it).
  if (si && si->si_code == SI_QUEUE && g.cb) {
    int v = si->si_value.sival_int;
    uint32_t token = load(&g.round.phase_token);
    if (v < 0 && token && static_cast<uint32_t>(-v) == token && si->si_pid == g.pid &&
        load(&g.round.state) == CR_STATE_ACTIVE) {
      on_phase_signal(load(&g.round.seq));
      errno = saved;
      return;
    }
  }
  // Anything else is the application's signal: its own disposition decides.
  if (g.app_action_set) {
    const struct sigaction& a = g.app_action;
    if (a.sa_flags & SA_SIGINFO) {
      if (a.sa_sigaction) a.sa_sigaction(sig, si, uctx);
    } else if (a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN) {
      a.sa_handler(sig);
    }
  }
  errno = saved;
}

void atfork_child() {
  // The child is a new process: a block of its own, no request of its parent's, no callback
  // thread (BLCR: it is not inherited), the forking thread alone.
  if (!make_control_block(kKindFull)) g.cb = nullptr;
  memset(&g.round, 0, sizeof g.round);
  g.tc_tid = 0;
  g.tc_go = 0;
  g.tc_thread_started = false;
  g.n_tc_cbs = 0;
  g.cs_count = 0;
  ThreadRec* me = tls_rec;
  for (auto& t : g.threads)
    if (t != me) t = nullptr;
  if (me) {
    me->tid = sys_gettid();
    me->chain = nullptr;
    me->cs_depth = 0;
  }
  for (auto& h : g.handles)  // requests belong to the parent
    if (h.fd >= 0) {
      ::close(h.fd);
      h.fd = -1;
    }
  if (g.cb) {
    g.cb->n_private_fds = 0;
    for (auto& slot : g.cb->helpers) slot = 0;
  }
}

bool start_callback_thread() {
  bool no = false;
  if (!__atomic_compare_exchange_n(&g.tc_thread_started, &no, true, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (!load(&g.tc_tid)) ::sched_yield();  // another thread is starting it
    return true;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  struct Start {
    static void* run(void*) {
      cr_init();
      return callback_thread_main(nullptr);
    }
  };
  int e = pthread_create(&t, &attr, &Start::run, nullptr);
  pthread_attr_destroy(&attr);
  if (e) {
    __atomic_store_n(&g.tc_thread_started, false, __ATOMIC_RELEASE);
    errno = e;
    return false;
  }
  while (!load(&g.tc_tid)) ::sched_yield();  // requests go to it from now on
  return true;
}

bool in_callback(const ThreadRec* rec) {
  return rec && rec->chain;
}

}  // namespace

ThreadRec* self_rec() {
  return tls_rec;
}

void install_handler() {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  real_sigaction(kSignal, &sa, nullptr);
}

}  // namespace crkit::libcr

using namespace crkit::libcr;

extern "C" {

CR_EXPORT int cr_link_me = 0;
extern const int cri_signum;
const int cri_signum = kSignal;

// The full library; a libcr_run/libcr_omit stub loaded too sees cri_full_library and steps
// aside.
CR_EXPORT int cri_full_library = 1;

__attribute__((constructor)) static void cri_init() {
  for (auto& h : g.handles) h.fd = -1;
  g.cb_fd = -1;
  g.hold_init = CR_HOLD_BOTH;
  g.hold_uninit = CR_HOLD_BOTH;
  if (const char* e = getenv("LIBCR_DISABLE_NSCD"); e && *e) {
    using Fn = void (*)();
    if (auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "__nss_disable_nscd"))) fn();
  }
  // A stub may have made the block already (libcr_run preloaded into a program linked with
  // libcr): take it over.
  using StubFn = int (*)();
  auto stub_fd = reinterpret_cast<StubFn>(dlsym(RTLD_DEFAULT, "cri_stub_release"));
  if (stub_fd) stub_fd();
  if (!make_control_block(kKindFull)) return;
  pthread_key_create(&g_exit_key, thread_exit);
  pthread_atfork(nullptr, nullptr, atfork_child);
  install_handler();
  g.ready = true;
}

CR_EXPORT cr_client_id_t cr_init(void) {
  if (!g.ready || !g.cb) return fail_errno(ENOSYS);
  ThreadRec* rec = tls_rec;
  for (int i = 0; !rec && i < kMaxThreads; ++i) {  // one an exited thread left
    ThreadRec* t = __atomic_load_n(&g.threads[i], __ATOMIC_ACQUIRE);
    if (t && cas(&t->in_use, 0u, 1u)) {
      int slot = t->slot;
      memset(t, 0, sizeof *t);
      t->slot = slot;
      t->hold = CR_HOLD_DFLT;
      t->in_use = 1;
      store(&t->tid, sys_gettid());
      rec = t;
      tls_rec = rec;
      pthread_setspecific(g_exit_key, rec);
    }
  }
  if (!rec) {
    void* p = ::mmap(nullptr, sizeof(ThreadRec), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return fail_errno(ENOMEM);
    rec = static_cast<ThreadRec*>(p);
    rec->tid = sys_gettid();
    rec->hold = CR_HOLD_DFLT;
    rec->slot = -1;
    rec->in_use = 1;
    for (int i = 0; i < kMaxThreads; ++i)
      if (cas(&g.threads[i], static_cast<ThreadRec*>(nullptr), rec)) {
        rec->slot = i;
        break;
      }
    if (rec->slot < 0) {
      ::munmap(p, sizeof(ThreadRec));
      return fail_errno(ENOMEM);
    }
    tls_rec = rec;
    pthread_setspecific(g_exit_key, rec);
  }
  return rec->next_client_id++;
}

CR_EXPORT int cri_init_checkpoint_args_t(cr_version_t version, cr_checkpoint_args_t* a) {
  if (version != CR_CHECKPOINT_ARGS_VERSION || !a) return fail_errno(EINVAL);
  a->cr_version = version;
  a->cr_scope = static_cast<cr_scope_t>(-1);
  a->cr_target = 0;
  a->cr_fd = -1;
  a->cr_signal = 0;
  a->cr_timeout = 0;
  a->cr_flags = 0;
  return 0;
}

CR_EXPORT int cri_init_restart_args_t(cr_version_t version, cr_restart_args_t* a) {
  if (version != CR_RESTART_ARGS_VERSION || !a) return fail_errno(EINVAL);
  a->cr_version = version;
  a->cr_fd = -1;
  a->cr_signal = 0;
  a->cr_flags = CR_RSTRT_RESTORE_PID;
  a->cr_relocate = nullptr;
  return 0;
}

CR_EXPORT cr_callback_id_t cr_register_callback(cr_callback_t fn, void* arg, int flags) {
  ThreadRec* rec = tls_rec;
  if (!rec) return fail_errno(CR_ENOINIT);
  if (in_callback(rec)) return fail_errno(EBUSY);
  int ctx = flags & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT);
  if ((ctx != CR_THREAD_CONTEXT && ctx != CR_SIGNAL_CONTEXT) || (flags & ~ctx))
    return fail_errno(EINVAL);
  if (ctx == CR_SIGNAL_CONTEXT) {
    if (rec->n_sig_cbs >= kMaxSignalCallbacks) return fail_errno(ENOSPC);
    int i = rec->n_sig_cbs;
    rec->sig_cbs[i] = Callback{fn, arg};
    __atomic_store_n(&rec->n_sig_cbs, i + 1, __ATOMIC_RELEASE);  // the handler may look now
    return i | CR_SIGNAL_CONTEXT;
  }
  cr_spinlock_lock(&g.register_lock);
  if (g.n_tc_cbs >= kMaxThreadCallbacks || load(&g.round.seq)) {
    int e = g.n_tc_cbs >= kMaxThreadCallbacks ? ENOSPC : EBUSY;
    cr_spinlock_unlock(&g.register_lock);
    return fail_errno(e);
  }
  int i = g.n_tc_cbs;
  g.tc_cbs[i] = Callback{fn, arg};
  __atomic_store_n(&g.n_tc_cbs, i + 1, __ATOMIC_RELEASE);
  cr_spinlock_unlock(&g.register_lock);
  if (!start_callback_thread()) return -1;
  return i | CR_THREAD_CONTEXT;
}

CR_EXPORT int cr_replace_callback(cr_callback_id_t id, cr_callback_t fn, void* arg, int flags) {
  ThreadRec* rec = tls_rec;
  if (!rec) return fail_errno(CR_ENOINIT);
  if (in_callback(rec)) return fail_errno(EBUSY);
  int ctx = flags & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT);
  if ((ctx != CR_THREAD_CONTEXT && ctx != CR_SIGNAL_CONTEXT) || (flags & ~ctx) || id < 0 ||
      (id & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT)) != ctx)
    return fail_errno(EINVAL);
  int i = id & ~(CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT);
  Callback* cb;
  if (ctx == CR_SIGNAL_CONTEXT) {
    if (i >= rec->n_sig_cbs) return fail_errno(EINVAL);
    cb = &rec->sig_cbs[i];
  } else {
    if (i >= load(&g.n_tc_cbs)) return fail_errno(EINVAL);
    if (load(&g.round.seq)) return fail_errno(EBUSY);
    cb = &g.tc_cbs[i];
  }
  __atomic_store_n(&cb->arg, arg, __ATOMIC_RELEASE);
  __atomic_store_n(&cb->fn, fn, __ATOMIC_RELEASE);
  return 0;
}

CR_EXPORT cr_hook_fn_t cr_register_hook(cr_hook_event_t event, cr_hook_fn_t fn) {
  if (!tls_rec) {
    errno = CR_ENOINIT;
    return CR_HOOK_FN_ERROR;
  }
  if (static_cast<int>(event) < 0 || event >= CR_NUM_HOOKS || fn == CR_HOOK_FN_ERROR) {
    errno = EINVAL;
    return CR_HOOK_FN_ERROR;
  }
  return __atomic_exchange_n(&g.hooks[event], fn, __ATOMIC_ACQ_REL);
}

CR_EXPORT int cr_hold_ctrl(int scope, int flags) {
  ThreadRec* rec = tls_rec;
  if (!rec) return fail_errno(CR_ENOINIT);
  int* slot = scope == CR_HOLD_SCOPE_THREAD   ? &rec->hold
              : scope == CR_HOLD_SCOPE_INIT   ? &g.hold_init
              : scope == CR_HOLD_SCOPE_UNINIT ? &g.hold_uninit
                                              : nullptr;
  if (!slot) return fail_errno(EINVAL);
  if (flags == CR_HOLD_READ) return *slot;
  if (flags < CR_HOLD_NONE || flags > CR_HOLD_DFLT ||
      (flags == CR_HOLD_DFLT && scope != CR_HOLD_SCOPE_THREAD))
    return fail_errno(EINVAL);
  int old = *slot;
  *slot = flags;
  return old;
}

CR_EXPORT int cr_inc_persist(void) {
  ThreadRec* rec = tls_rec;
  if (!rec) return fail_errno(CR_ENOINIT);
  if (rec->persist == 0x7fffffff) return fail_errno(ERANGE);
  return rec->persist++;
}

CR_EXPORT int cr_dec_persist(void) {
  ThreadRec* rec = tls_rec;
  if (!rec) return fail_errno(CR_ENOINIT);
  if (rec->persist == 0) return fail_errno(ERANGE);
  return rec->persist--;
}

CR_EXPORT int cr_status(void) {
  if (!tls_rec) return fail_errno(CR_ENOINIT);
  return static_cast<int>(load(&g.round.state));
}

// ---- critical sections: a reader/writer lock against checkpoints ----

static int check_client(ThreadRec* rec, cr_client_id_t id) {
  if (!rec) return fail_errno(CR_ENOINIT);
  if (id < 0 || id >= rec->next_client_id) return fail_errno(EINVAL);
  return 0;
}

CR_EXPORT int cr_tryenter_cs(cr_client_id_t id) {
  ThreadRec* rec = tls_rec;
  // Inside a callback the checkpoint is this thread's own business: no deferral.
  if (in_callback(rec) && (id == CR_ID_CALLBACK || (id >= 0 && id < rec->next_client_id))) return 0;
  if (check_client(rec, id) < 0) return -1;
  if (rec->cs_depth > 0) {
    ++rec->cs_depth;
    return 0;
  }
  if (load(&g.round.seq)) return 1;
  __atomic_add_fetch(&g.cs_count, 1u, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&g.round.seq, __ATOMIC_SEQ_CST)) {  // a request came: it goes first
    if (__atomic_sub_fetch(&g.cs_count, 1u, __ATOMIC_SEQ_CST) == 0) {
      futex_wake(&g.cs_count, false);
      sections_left();
    }
    return 1;
  }
  rec->cs_depth = 1;
  return 0;
}

CR_EXPORT int cr_enter_cs(cr_client_id_t id) {
  ThreadRec* rec = tls_rec;
  // Inside a callback the checkpoint is this thread's own business: no deferral.
  if (in_callback(rec) && (id == CR_ID_CALLBACK || (id >= 0 && id < rec->next_client_id))) return 0;
  if (check_client(rec, id) < 0) return -1;
  for (;;) {
    int r = cr_tryenter_cs(id);
    if (r <= 0) return r;
    // A checkpoint is pending or running: wait for its end (no starvation of requests).
    uint32_t s = load(&g.round.state);
    if (s != CR_STATE_IDLE) futex_wait(&g.round.state, s, 100, false);
  }
}

CR_EXPORT int cr_leave_cs(cr_client_id_t id) {
  ThreadRec* rec = tls_rec;
  // Inside a callback the checkpoint is this thread's own business: no deferral.
  if (in_callback(rec) && (id == CR_ID_CALLBACK || (id >= 0 && id < rec->next_client_id))) return 0;
  if (check_client(rec, id) < 0) return -1;
  if (rec->cs_depth <= 0) return fail_errno(EINVAL);
  if (--rec->cs_depth > 0) return 0;
  if (__atomic_sub_fetch(&g.cs_count, 1u, __ATOMIC_SEQ_CST) == 0) {
    futex_wake(&g.cs_count, false);
    if (!rec->chain) sections_left();
  }
  if (load(&g.round.seq)) leave_cs_hook(rec);
  return 0;
}

// ---- spinlocks (signal-safe) ----

CR_EXPORT void cr_spinlock_init(cr_spinlock_t* l) {
  __atomic_store_n(l, 0u, __ATOMIC_RELEASE);
}
CR_EXPORT int cr_spinlock_trylock(cr_spinlock_t* l) {
  return __atomic_exchange_n(l, 1u, __ATOMIC_ACQUIRE) == 0;
}
CR_EXPORT void cr_spinlock_lock(cr_spinlock_t* l) {
  while (!cr_spinlock_trylock(l)) ::sched_yield();
}
CR_EXPORT void cr_spinlock_unlock(cr_spinlock_t* l) {
  __atomic_store_n(l, 0u, __ATOMIC_RELEASE);
}

}  // extern "C"
