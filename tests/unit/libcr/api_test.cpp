// libcr's API without a checkpoint: cr_init and the per-thread state, CR_ENOINIT from every
// function that needs cr_init, CR_ENOTCB from the callback-only functions outside callbacks,
// argument checks (EINVAL, ERANGE), defaults of the argument initializers, cr_strerror,
// spinlocks, hooks, holds, persistence counts, critical sections, callback ids, handles that
// are not handles, and the interposed signal functions for CR_SIGNUM.
//
// Callbacks, hooks and holds are process-wide or per-thread state that libcr cannot forget, so
// tests that need a clean thread run their body in a fresh std::thread (run_in_thread).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "libcr.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000  // the kernel's flag; glibc does not export it
#endif

namespace {

// Runs body in a new thread (that has not called cr_init) and waits for it. gtest's
// assertions work from any thread; a fatal one ends only body.
void run_in_thread(const std::function<void()>& body) {
  std::thread t(body);
  t.join();
}

int cb_noop(void*) {
  return 0;
}
int cb_other(void*) {
  return 0;
}

void hook_a(cr_hook_event_t) {}
void hook_b(cr_hook_event_t) {}

// ---- cr_init ----

TEST(LibcrInit, ClientIdsCountFromZeroPerThread) {
  run_in_thread([] {
    EXPECT_EQ(cr_init(), 0);
    EXPECT_EQ(cr_init(), 1);
    EXPECT_EQ(cr_init(), 2);
    run_in_thread([] {  // another thread has its own counter
      EXPECT_EQ(cr_init(), 0);
      EXPECT_EQ(cr_init(), 1);
    });
    EXPECT_EQ(cr_init(), 3);
  });
}

TEST(LibcrInit, LinkSymbolsAndSignal) {
  EXPECT_EQ(cri_signum, CR_SIGNUM);
  EXPECT_EQ(CR_SIGNUM, SIGRTMAX);
  EXPECT_EQ(cr_link_me, 0);
}

// ---- CR_ENOINIT: a thread that never called cr_init ----

TEST(LibcrNoInit, EveryFunctionThatNeedsCrInitFailsWithEnoinit) {
  run_in_thread([] {
    errno = 0;
    EXPECT_EQ(cr_status(), -1);
    EXPECT_EQ(errno, CR_ENOINIT);

    errno = 0;
    EXPECT_EQ(cr_enter_cs(0), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_tryenter_cs(0), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_leave_cs(0), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_enter_cs(CR_ID_CALLBACK), -1);
    EXPECT_EQ(errno, CR_ENOINIT);

    errno = 0;
    EXPECT_EQ(cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_register_callback(cb_noop, nullptr, CR_THREAD_CONTEXT), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_replace_callback(0 | CR_SIGNAL_CONTEXT, cb_noop, nullptr, CR_SIGNAL_CONTEXT), -1);
    EXPECT_EQ(errno, CR_ENOINIT);

    errno = 0;
    EXPECT_EQ(cr_register_hook(CR_HOOK_CONT_SIGNAL_CONTEXT, hook_a), CR_HOOK_FN_ERROR);
    EXPECT_EQ(errno, CR_ENOINIT);

    errno = 0;
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), -1);
    EXPECT_EQ(errno, CR_ENOINIT);

    errno = 0;
    EXPECT_EQ(cr_inc_persist(), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
    errno = 0;
    EXPECT_EQ(cr_dec_persist(), -1);
    EXPECT_EQ(errno, CR_ENOINIT);
  });
}

TEST(LibcrNoInit, FunctionsThatNeedNoCrInitWork) {
  run_in_thread([] {
    cr_checkpoint_args_t a;
    EXPECT_EQ(cr_initialize_checkpoint_args_t(&a), 0);
    cr_spinlock_t l = CR_SPINLOCK_INITIALIZER;
    EXPECT_NE(cr_spinlock_trylock(&l), 0);
    cr_spinlock_unlock(&l);
    EXPECT_STREQ(cr_strerror(CR_ENOINIT), "Calling thread has not called cr_init()");
    EXPECT_EQ(cr_checkpoint(0), -CR_ENOTCB);  // not CR_ENOINIT: it is callback-only
  });
}

// ---- CR_ENOTCB: callback-only functions outside callbacks ----

TEST(LibcrNotCallback, CallbackOnlyFunctionsFailOutsideCallbacks) {
  ASSERT_GE(cr_init(), 0);
  for (int flags : {CR_CHECKPOINT_READY, CR_CHECKPOINT_TEMP_FAILURE, CR_CHECKPOINT_OMIT})
    EXPECT_EQ(cr_checkpoint(flags), -CR_ENOTCB) << flags;

  errno = 0;
  EXPECT_EQ(cr_replace_self(cb_noop, nullptr, CR_SIGNAL_CONTEXT), -1);
  EXPECT_EQ(errno, CR_ENOTCB);

  errno = 0;
  EXPECT_EQ(cr_get_checkpoint_info(), nullptr);
  EXPECT_EQ(errno, CR_ENOTCB);
  errno = 0;
  EXPECT_EQ(cr_get_restart_info(), nullptr);
  EXPECT_EQ(errno, CR_ENOTCB);

  errno = 0;
  EXPECT_EQ(cr_forward_checkpoint(CR_SCOPE_PROC, 0), -1);
  EXPECT_EQ(errno, CR_ENOTCB);
}

TEST(LibcrNotCallback, AlsoWithoutCrInit) {
  run_in_thread([] {
    EXPECT_EQ(cr_checkpoint(0), -CR_ENOTCB);
    errno = 0;
    EXPECT_EQ(cr_replace_self(cb_noop, nullptr, CR_SIGNAL_CONTEXT), -1);
    EXPECT_EQ(errno, CR_ENOTCB);
    EXPECT_EQ(cr_get_checkpoint_info(), nullptr);
    EXPECT_EQ(cr_get_restart_info(), nullptr);
    errno = 0;
    EXPECT_EQ(cr_forward_checkpoint(CR_SCOPE_PROC, 0), -1);
    EXPECT_EQ(errno, CR_ENOTCB);
  });
}

// ---- argument initializers ----

TEST(LibcrArgs, CheckpointArgsDefaults) {
  cr_checkpoint_args_t a;
  memset(&a, 0x5a, sizeof a);
  ASSERT_EQ(cr_initialize_checkpoint_args_t(&a), 0);
  EXPECT_EQ(a.cr_version, CR_CHECKPOINT_ARGS_VERSION);
  EXPECT_EQ(static_cast<int>(a.cr_scope), -1);  // must be set by the caller
  EXPECT_EQ(a.cr_target, 0);
  EXPECT_EQ(a.cr_fd, -1);
  EXPECT_EQ(a.cr_signal, 0);
  EXPECT_EQ(a.cr_timeout, 0u);
  EXPECT_EQ(a.cr_flags, 0u);
}

TEST(LibcrArgs, RestartArgsDefaults) {
  cr_restart_args_t a;
  memset(&a, 0x5a, sizeof a);
  ASSERT_EQ(cr_initialize_restart_args_t(&a), 0);
  EXPECT_EQ(a.cr_version, CR_RESTART_ARGS_VERSION);
  EXPECT_EQ(a.cr_fd, -1);
  EXPECT_EQ(a.cr_signal, 0);
  EXPECT_EQ(a.cr_flags, static_cast<unsigned>(CR_RSTRT_RESTORE_PID));
  EXPECT_EQ(a.cr_relocate, nullptr);
}

TEST(LibcrArgs, WrongVersionIsEinval) {
  cr_checkpoint_args_t c;
  cr_restart_args_t r;
  for (int v : {0, 2, -1, 1000}) {
    errno = 0;
    EXPECT_EQ(cri_init_checkpoint_args_t(v, &c), -1) << v;
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(cri_init_restart_args_t(v, &r), -1) << v;
    EXPECT_EQ(errno, EINVAL);
  }
}

TEST(LibcrArgs, RelocateSize) {
  EXPECT_EQ(CR_RSTRT_RELOCATE_SIZE(0), sizeof(struct cr_rstrt_relocate));
  EXPECT_EQ(CR_RSTRT_RELOCATE_SIZE(3),
            sizeof(struct cr_rstrt_relocate) + 3 * sizeof(struct cr_rstrt_relocate_pair));
}

// ---- cr_request_checkpoint / cr_request_restart: argument errors (nothing is started) ----

cr_checkpoint_args_t valid_checkpoint_args() {
  cr_checkpoint_args_t a;
  cr_initialize_checkpoint_args_t(&a);
  a.cr_scope = CR_SCOPE_PROC;
  a.cr_fd = STDERR_FILENO;
  a.cr_flags = CR_CHKPT_PROHIBIT_SELF;  // in case a check below let it through
  return a;
}

TEST(LibcrRequestArgs, CheckpointEinval) {
  cr_checkpoint_handle_t h = 0;
  cr_checkpoint_args_t a = valid_checkpoint_args();
  errno = 0;
  EXPECT_EQ(cr_request_checkpoint(nullptr, &h), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(cr_request_checkpoint(&a, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);

  std::vector<std::function<void(cr_checkpoint_args_t&)>> bad = {
      [](cr_checkpoint_args_t& x) { x.cr_version = 2; },
      [](cr_checkpoint_args_t& x) { x.cr_scope = static_cast<cr_scope_t>(-1); },  // default
      [](cr_checkpoint_args_t& x) { x.cr_scope = static_cast<cr_scope_t>(4); },
      [](cr_checkpoint_args_t& x) { x.cr_target = -5; },
      [](cr_checkpoint_args_t& x) { x.cr_flags |= 0x00100000; },
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    cr_checkpoint_args_t b = valid_checkpoint_args();
    bad[i](b);
    errno = 0;
    EXPECT_EQ(cr_request_checkpoint(&b, &h), -1) << "case " << i;
    EXPECT_EQ(errno, EINVAL) << "case " << i;
  }
}

TEST(LibcrRequestArgs, CheckpointEbadf) {
  cr_checkpoint_handle_t h = 0;
  cr_checkpoint_args_t a = valid_checkpoint_args();
  a.cr_flags = 0;
  a.cr_fd = -1;  // the initializer's default: must be set
  errno = 0;
  EXPECT_EQ(cr_request_checkpoint(&a, &h), -1);
  EXPECT_EQ(errno, EBADF);
  int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);  // a closed descriptor
  a.cr_fd = fd;
  errno = 0;
  EXPECT_EQ(cr_request_checkpoint(&a, &h), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST(LibcrRequestArgs, ProhibitSelfIsEdeadlkForEveryScopeThatIncludesUs) {
  cr_checkpoint_handle_t h = 0;
  struct Case {
    cr_scope_t scope;
    pid_t target;
  };
  for (Case c :
       {Case{CR_SCOPE_PROC, 0}, Case{CR_SCOPE_PROC, getpid()}, Case{CR_SCOPE_PGRP, 0},
        Case{CR_SCOPE_PGRP, getpgrp()}, Case{CR_SCOPE_SESS, 0}, Case{CR_SCOPE_SESS, getsid(0)},
        Case{CR_SCOPE_TREE, 0}, Case{CR_SCOPE_TREE, getpid()}, Case{CR_SCOPE_TREE, getppid()}}) {
    cr_checkpoint_args_t a = valid_checkpoint_args();
    a.cr_scope = c.scope;
    a.cr_target = c.target;
    errno = 0;
    EXPECT_EQ(cr_request_checkpoint(&a, &h), -1) << c.scope << " " << c.target;
    EXPECT_EQ(errno, EDEADLK) << c.scope << " " << c.target;
  }
}

TEST(LibcrRequestArgs, RestartErrors) {
  cr_restart_handle_t h = 0;
  cr_restart_args_t a;
  cr_initialize_restart_args_t(&a);
  errno = 0;
  EXPECT_EQ(cr_request_restart(&a, &h), -1);  // cr_fd -1 by default
  EXPECT_EQ(errno, EBADF);
  errno = 0;
  EXPECT_EQ(cr_request_restart(nullptr, &h), -1);
  EXPECT_EQ(errno, EINVAL);

  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  a.cr_fd = fd;
  errno = 0;
  EXPECT_EQ(cr_request_restart(&a, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);

  cr_restart_args_t b = a;
  b.cr_version = 2;
  errno = 0;
  EXPECT_EQ(cr_request_restart(&b, &h), -1);
  EXPECT_EQ(errno, EINVAL);

  b = a;
  b.cr_flags |= 0x100;
  errno = 0;
  EXPECT_EQ(cr_request_restart(&b, &h), -1);
  EXPECT_EQ(errno, EINVAL);

  std::vector<char> mem(CR_RSTRT_RELOCATE_SIZE(CR_MAX_RSTRT_RELOC + 1));
  auto* rel = reinterpret_cast<struct cr_rstrt_relocate*>(mem.data());
  rel->count = CR_MAX_RSTRT_RELOC + 1;
  for (unsigned i = 0; i < rel->count; ++i) rel->path[i] = {"/a", "/b"};
  b = a;
  b.cr_relocate = rel;
  errno = 0;
  EXPECT_EQ(cr_request_restart(&b, &h), -1);
  EXPECT_EQ(errno, EINVAL);

  rel->count = 1;
  rel->path[0] = {"/a", nullptr};
  errno = 0;
  EXPECT_EQ(cr_request_restart(&b, &h), -1);
  EXPECT_EQ(errno, EINVAL);
  ::close(fd);
}

// ---- handles that are not handles ----

TEST(LibcrHandles, NotAHandleIsEinval) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  cr_checkpoint_handle_t h = static_cast<cr_checkpoint_handle_t>(fd);
  cr_restart_handle_t r = static_cast<cr_restart_handle_t>(fd);
  struct timeval tv = {0, 0};
  char buf[16];
  char* msg = reinterpret_cast<char*>(0x1);

  for (cr_checkpoint_handle_t* hp : {&h, static_cast<cr_checkpoint_handle_t*>(nullptr)}) {
    errno = 0;
    EXPECT_EQ(cr_wait_checkpoint(hp, &tv), -1);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(cr_log_checkpoint(hp, sizeof buf, buf), -1);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(cr_reap_checkpoint(hp), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(cr_poll_checkpoint(hp, &tv), CR_POLL_CHKPT_ERR_PRE);
    EXPECT_EQ(cr_poll_checkpoint_msg(hp, &tv, &msg), CR_POLL_CHKPT_ERR_PRE);
    EXPECT_EQ(msg, nullptr);

    cr_restart_handle_t* rp = hp ? &r : nullptr;
    errno = 0;
    EXPECT_EQ(cr_wait_restart(rp, &tv), -1);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(cr_log_restart(rp, sizeof buf, buf), -1);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(cr_reap_restart(rp), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(cr_poll_restart(rp, &tv), CR_POLL_RSTRT_ERR_PRE);
    msg = reinterpret_cast<char*>(0x1);
    EXPECT_EQ(cr_poll_restart_msg(rp, &tv, &msg), CR_POLL_RSTRT_ERR_PRE);
    EXPECT_EQ(msg, nullptr);
  }
  // BLCR: reaping a descriptor that is not a request does not close it.
  EXPECT_GE(::fcntl(fd, F_GETFD), 0);
  ::close(fd);

  cr_checkpoint_handle_t huge = ~0UL;
  errno = 0;
  EXPECT_EQ(cr_reap_checkpoint(&huge), -1);
  EXPECT_EQ(errno, EINVAL);
}

// ---- cr_strerror ----

TEST(LibcrStrerror, EveryCrErrorCode) {
  struct Code {
    int code;
    int value;
    const char* text;
  };
  const Code codes[] = {
      {CR_ETEMPFAIL, 2354, "Temporary error: checkpoint cancelled"},
      {CR_EPERMFAIL, 2355, "Permanent failure: checkpoint cancelled and job killed"},
      {CR_ENOSUPPORT, 2356, "Checkpoint support not linked into one or more processes"},
      {CR_EVERSION, 2357, "Requested kernel interface version is not supported"},
      {CR_EOMITTED, 2358, "Process omitted from checkpoint at a callback's request"},
      {CR_EBADARCH, 2359, "Context file does not match the kernel architecture"},
      {CR_EPTRACED, 2360, "One or more target processes is being ptraced"},
      {CR_EPTRACER, 2361, "One or more target processes has ptrace children"},
      {CR_ERSTRTABRT, 2362, "Restart aborted: restart cancelled and job killed"},
      {CR_ERESTARTED, 2363, "Request is invalid across a restart"},
      {CR_ENOTCB, 2364, "Call is only valid from a checkpoint callback"},
      {CR_ENOINIT, 2365, "Calling thread has not called cr_init()"},
  };
  EXPECT_EQ(CR_MIN_ERRCODE, 2353);
  EXPECT_EQ(CR_MAX_ERRCODE, 2366);
  for (const Code& c : codes) {
    EXPECT_EQ(c.code, c.value);
    EXPECT_STREQ(cr_strerror(c.code), c.text) << c.code;
  }
}

TEST(LibcrStrerror, OrdinaryErrnoIsStrerror) {
  for (int e : {0, EPERM, ENOENT, ESRCH, EINTR, EBADF, EAGAIN, ENOMEM, EBUSY, EINVAL, ERANGE,
                EDEADLK, ENOSYS}) {
    std::string want = strerror(e);
    EXPECT_EQ(std::string(cr_strerror(e)), want) << e;
  }
  // Outside BLCR's range and outside errno's: still a string.
  ASSERT_NE(cr_strerror(CR_MAX_ERRCODE), nullptr);
  ASSERT_NE(cr_strerror(CR_MIN_ERRCODE), nullptr);
  ASSERT_NE(cr_strerror(-1), nullptr);
}

// ---- spinlocks ----

TEST(LibcrSpinlock, TrylockLockUnlock) {
  cr_spinlock_t l = 12345u;
  cr_spinlock_init(&l);
  EXPECT_EQ(l, CR_SPINLOCK_INITIALIZER);
  EXPECT_NE(cr_spinlock_trylock(&l), 0);  // obtained
  EXPECT_EQ(cr_spinlock_trylock(&l), 0);  // held
  cr_spinlock_unlock(&l);
  EXPECT_NE(cr_spinlock_trylock(&l), 0);
  cr_spinlock_unlock(&l);
  cr_spinlock_lock(&l);
  EXPECT_EQ(cr_spinlock_trylock(&l), 0);
  cr_spinlock_unlock(&l);
}

TEST(LibcrSpinlock, MutualExclusion) {
  cr_spinlock_t l = CR_SPINLOCK_INITIALIZER;
  long counter = 0;  // protected by l only
  constexpr int kThreads = 4, kIters = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        cr_spinlock_lock(&l);
        long v = counter;
        if ((i & 255) == 0) std::this_thread::yield();
        counter = v + 1;
        cr_spinlock_unlock(&l);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, static_cast<long>(kThreads) * kIters);
}

// ---- hooks ----

TEST(LibcrHooks, RegisterReturnsPrevious) {
  ASSERT_GE(cr_init(), 0);
  for (int e = CR_HOOK_CONT_SIGNAL_CONTEXT; e < CR_NUM_HOOKS; ++e) {
    auto ev = static_cast<cr_hook_event_t>(e);
    cr_hook_fn_t orig = cr_register_hook(ev, hook_a);
    ASSERT_NE(orig, CR_HOOK_FN_ERROR) << e;
    EXPECT_EQ(cr_register_hook(ev, hook_b), hook_a) << e;
    EXPECT_EQ(cr_register_hook(ev, nullptr), hook_b) << e;
    EXPECT_EQ(cr_register_hook(ev, orig), nullptr) << e;
  }
}

TEST(LibcrHooks, ProcessScoped) {
  ASSERT_GE(cr_init(), 0);
  cr_hook_fn_t orig = cr_register_hook(CR_HOOK_RSTRT_THREAD_CONTEXT, hook_a);
  ASSERT_NE(orig, CR_HOOK_FN_ERROR);
  run_in_thread([] {  // another thread sees (and replaces) the same table
    ASSERT_GE(cr_init(), 0);
    EXPECT_EQ(cr_register_hook(CR_HOOK_RSTRT_THREAD_CONTEXT, hook_b), hook_a);
  });
  EXPECT_EQ(cr_register_hook(CR_HOOK_RSTRT_THREAD_CONTEXT, orig), hook_b);
}

TEST(LibcrHooks, BadEventIsEinval) {
  ASSERT_GE(cr_init(), 0);
  for (int e : {static_cast<int>(CR_NUM_HOOKS), -1, 100}) {
    errno = 0;
    EXPECT_EQ(cr_register_hook(static_cast<cr_hook_event_t>(e), hook_a), CR_HOOK_FN_ERROR) << e;
    EXPECT_EQ(errno, EINVAL) << e;
  }
}

// ---- cr_hold_ctrl ----

TEST(LibcrHold, DefaultsAndReadSetReturnsPrevious) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), CR_HOLD_DFLT);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_CONT), CR_HOLD_DFLT);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), CR_HOLD_CONT);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_NONE), CR_HOLD_CONT);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_RSTRT), CR_HOLD_NONE);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_BOTH), CR_HOLD_RSTRT);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_DFLT), CR_HOLD_BOTH);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), CR_HOLD_DFLT);

    for (int scope : {CR_HOLD_SCOPE_INIT, CR_HOLD_SCOPE_UNINIT}) {
      int orig = cr_hold_ctrl(scope, CR_HOLD_READ);
      EXPECT_EQ(orig, CR_HOLD_BOTH) << scope;  // BLCR's defaults (nobody changed them)
      EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_NONE), orig) << scope;
      EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_CONT), CR_HOLD_NONE) << scope;
      EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_READ), CR_HOLD_CONT) << scope;
      EXPECT_EQ(cr_hold_ctrl(scope, orig), CR_HOLD_CONT) << scope;
    }
  });
}

TEST(LibcrHold, ThreadScopeIsPerThread) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_NONE), CR_HOLD_DFLT);
    run_in_thread([] {
      ASSERT_GE(cr_init(), 0);
      EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), CR_HOLD_DFLT);
    });
    EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), CR_HOLD_NONE);
  });
}

TEST(LibcrHold, Einval) {
  ASSERT_GE(cr_init(), 0);
  for (int scope : {-1, 3, 100}) {
    errno = 0;
    EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_READ), -1) << scope;
    EXPECT_EQ(errno, EINVAL) << scope;
    errno = 0;
    EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_BOTH), -1) << scope;
    EXPECT_EQ(errno, EINVAL) << scope;
  }
  for (int scope : {CR_HOLD_SCOPE_THREAD, CR_HOLD_SCOPE_INIT, CR_HOLD_SCOPE_UNINIT})
    for (int flags : {-2, 5, 0x100}) {
      errno = 0;
      EXPECT_EQ(cr_hold_ctrl(scope, flags), -1) << scope << " " << flags;
      EXPECT_EQ(errno, EINVAL) << scope << " " << flags;
    }
  int init = cr_hold_ctrl(CR_HOLD_SCOPE_INIT, CR_HOLD_READ);
  int uninit = cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT, CR_HOLD_READ);
  for (int scope : {CR_HOLD_SCOPE_INIT, CR_HOLD_SCOPE_UNINIT}) {
    errno = 0;
    EXPECT_EQ(cr_hold_ctrl(scope, CR_HOLD_DFLT), -1) << scope;  // only for SCOPE_THREAD
    EXPECT_EQ(errno, EINVAL) << scope;
  }
  // Failed calls changed nothing.
  EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_INIT, CR_HOLD_READ), init);
  EXPECT_EQ(cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT, CR_HOLD_READ), uninit);
}

// ---- cr_inc_persist / cr_dec_persist ----

TEST(LibcrPersist, CountsPerThreadAndReturnsPrevious) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    errno = 0;
    EXPECT_EQ(cr_dec_persist(), -1);  // at 0
    EXPECT_EQ(errno, ERANGE);
    EXPECT_EQ(cr_inc_persist(), 0);
    EXPECT_EQ(cr_inc_persist(), 1);
    run_in_thread([] {
      ASSERT_GE(cr_init(), 0);
      EXPECT_EQ(cr_inc_persist(), 0);  // a count of its own
    });
    EXPECT_EQ(cr_dec_persist(), 2);
    EXPECT_EQ(cr_dec_persist(), 1);
    errno = 0;
    EXPECT_EQ(cr_dec_persist(), -1);
    EXPECT_EQ(errno, ERANGE);
    EXPECT_EQ(cr_inc_persist(), 0);  // the failed call did not go below 0
  });
}

// ---- critical sections (no checkpoint around) ----

TEST(LibcrCriticalSection, NestingAndTryenter) {
  run_in_thread([] {
    cr_client_id_t id = cr_init();
    ASSERT_EQ(id, 0);
    EXPECT_EQ(cr_status(), CR_STATE_IDLE);
    EXPECT_EQ(cr_enter_cs(id), 0);
    EXPECT_EQ(cr_enter_cs(id), 0);
    EXPECT_EQ(cr_tryenter_cs(id), 0);
    EXPECT_EQ(cr_status(), CR_STATE_IDLE);
    EXPECT_EQ(cr_leave_cs(id), 0);
    EXPECT_EQ(cr_leave_cs(id), 0);
    EXPECT_EQ(cr_leave_cs(id), 0);
    errno = 0;
    EXPECT_EQ(cr_leave_cs(id), -1);  // one more leave than enters
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(cr_tryenter_cs(id), 0);
    EXPECT_EQ(cr_leave_cs(id), 0);
  });
}

TEST(LibcrCriticalSection, TwoThreadsMayHoldSectionsAtOnce) {
  run_in_thread([] {
    cr_client_id_t id = cr_init();
    ASSERT_GE(id, 0);
    ASSERT_EQ(cr_enter_cs(id), 0);
    run_in_thread([] {
      cr_client_id_t id2 = cr_init();
      ASSERT_GE(id2, 0);
      EXPECT_EQ(cr_tryenter_cs(id2), 0);  // not exclusive among threads
      EXPECT_EQ(cr_leave_cs(id2), 0);
    });
    EXPECT_EQ(cr_leave_cs(id), 0);
  });
}

TEST(LibcrCriticalSection, LeaveWithoutEnterIsEinval) {
  run_in_thread([] {
    cr_client_id_t id = cr_init();
    ASSERT_GE(id, 0);
    errno = 0;
    EXPECT_EQ(cr_leave_cs(id), -1);
    EXPECT_EQ(errno, EINVAL);
  });
}

TEST(LibcrCriticalSection, BadClientIdIsEinval) {
  run_in_thread([] {
    cr_client_id_t id = cr_init();
    ASSERT_EQ(id, 0);
    for (cr_client_id_t bad : {id + 1, id + 100, -5, CR_ID_CALLBACK}) {
      errno = 0;
      EXPECT_EQ(cr_enter_cs(bad), -1) << bad;
      EXPECT_EQ(errno, EINVAL) << bad;
      errno = 0;
      EXPECT_EQ(cr_tryenter_cs(bad), -1) << bad;
      EXPECT_EQ(errno, EINVAL) << bad;
      errno = 0;
      EXPECT_EQ(cr_leave_cs(bad), -1) << bad;
      EXPECT_EQ(errno, EINVAL) << bad;
    }
    // Each id cr_init gave is good.
    cr_client_id_t id1 = cr_init();
    ASSERT_EQ(id1, 1);
    EXPECT_EQ(cr_enter_cs(id1), 0);
    EXPECT_EQ(cr_leave_cs(id1), 0);
    EXPECT_EQ(cr_enter_cs(id), 0);
    EXPECT_EQ(cr_leave_cs(id), 0);
  });
}

TEST(LibcrStatus, IdleOutsideCheckpoints) {
  ASSERT_GE(cr_init(), 0);
  EXPECT_EQ(cr_status(), CR_STATE_IDLE);
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    EXPECT_EQ(cr_status(), CR_STATE_IDLE);
  });
}

// ---- callback registration ----

TEST(LibcrCallbacks, SignalContextIdsAreIndexOrFlag) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    cr_callback_id_t a = cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT);
    cr_callback_id_t b = cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT);
    EXPECT_EQ(a, 0 | CR_SIGNAL_CONTEXT);
    EXPECT_EQ(b, 1 | CR_SIGNAL_CONTEXT);
    EXPECT_EQ(cr_replace_callback(a, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
    EXPECT_EQ(cr_replace_callback(b, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
    run_in_thread([] {  // per-thread list: counts from 0 again
      ASSERT_GE(cr_init(), 0);
      cr_callback_id_t c = cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT);
      EXPECT_EQ(c, 0 | CR_SIGNAL_CONTEXT);
      EXPECT_EQ(cr_replace_callback(c, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
    });
  });
}

TEST(LibcrCallbacks, ThreadContextIdsAreIndexOrFlag) {
  ASSERT_GE(cr_init(), 0);
  cr_callback_id_t a = cr_register_callback(cb_noop, nullptr, CR_THREAD_CONTEXT);
  cr_callback_id_t b = cr_register_callback(cb_noop, nullptr, CR_THREAD_CONTEXT);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(a & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT), CR_THREAD_CONTEXT);
  EXPECT_EQ(b & (CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT), CR_THREAD_CONTEXT);
  EXPECT_EQ((b & CR_MAX_CALLBACKS), (a & CR_MAX_CALLBACKS) + 1);
  // Thread-context callbacks are global: another thread may replace them.
  run_in_thread([a] {
    ASSERT_GE(cr_init(), 0);
    EXPECT_EQ(cr_replace_callback(a, cb_other, nullptr, CR_THREAD_CONTEXT), 0);
  });
  EXPECT_EQ(cr_replace_callback(a, nullptr, nullptr, CR_THREAD_CONTEXT), 0);
  EXPECT_EQ(cr_replace_callback(b, nullptr, nullptr, CR_THREAD_CONTEXT), 0);
}

TEST(LibcrCallbacks, RegisterNeedsExactlyOneContext) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    for (int flags : {0, CR_THREAD_CONTEXT | CR_SIGNAL_CONTEXT, CR_SIGNAL_CONTEXT | 1,
                      CR_THREAD_CONTEXT | 0x10, 1, -1}) {
      errno = 0;
      EXPECT_EQ(cr_register_callback(cb_noop, nullptr, flags), -1) << std::hex << flags;
      EXPECT_EQ(errno, EINVAL) << std::hex << flags;
    }
    // Nothing was registered by the failed calls.
    EXPECT_EQ(cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT), 0 | CR_SIGNAL_CONTEXT);
    EXPECT_EQ(cr_replace_callback(0 | CR_SIGNAL_CONTEXT, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
  });
}

TEST(LibcrCallbacks, ReplaceErrors) {
  run_in_thread([] {
    ASSERT_GE(cr_init(), 0);
    cr_callback_id_t s = cr_register_callback(cb_noop, nullptr, CR_SIGNAL_CONTEXT);
    ASSERT_EQ(s, 0 | CR_SIGNAL_CONTEXT);
    cr_callback_id_t t = cr_register_callback(cb_noop, nullptr, CR_THREAD_CONTEXT);
    ASSERT_GE(t, 0);

    struct Case {
      cr_callback_id_t id;
      int flags;
      const char* what;
    };
    const Case cases[] = {
        {s, CR_THREAD_CONTEXT, "signal id, thread flag"},
        {t, CR_SIGNAL_CONTEXT, "thread id, signal flag"},
        {s, 0, "no context flag"},
        {s, CR_SIGNAL_CONTEXT | CR_THREAD_CONTEXT, "both flags"},
        {s, CR_SIGNAL_CONTEXT | 4, "extra bits"},
        {1 | CR_SIGNAL_CONTEXT, CR_SIGNAL_CONTEXT, "unregistered signal index"},
        {((t & CR_MAX_CALLBACKS) + 50) | CR_THREAD_CONTEXT, CR_THREAD_CONTEXT,
         "unregistered thread index"},
        {0, CR_SIGNAL_CONTEXT, "id without context"},
        {-1, CR_SIGNAL_CONTEXT, "negative id"},
    };
    for (const Case& c : cases) {
      errno = 0;
      EXPECT_EQ(cr_replace_callback(c.id, cb_other, nullptr, c.flags), -1) << c.what;
      EXPECT_EQ(errno, EINVAL) << c.what;
    }
    // Another thread's signal-context id means nothing in this thread.
    run_in_thread([s] {
      ASSERT_GE(cr_init(), 0);
      errno = 0;
      EXPECT_EQ(cr_replace_callback(s, cb_other, nullptr, CR_SIGNAL_CONTEXT), -1);
      EXPECT_EQ(errno, EINVAL);
    });
    EXPECT_EQ(cr_replace_callback(s, cb_other, nullptr, CR_SIGNAL_CONTEXT), 0);
    EXPECT_EQ(cr_replace_callback(s, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
    EXPECT_EQ(cr_replace_callback(t, nullptr, nullptr, CR_THREAD_CONTEXT), 0);
  });
}

// ---- the interposed signal functions: CR_SIGNUM stays libcr's ----

struct KernelSigaction {  // the kernel's struct sigaction (x86-64)
  void* handler;
  unsigned long flags;
  void* restorer;
  uint64_t mask;
};

KernelSigaction kernel_disposition(int sig) {
  KernelSigaction k{};
  EXPECT_EQ(::syscall(SYS_rt_sigaction, sig, nullptr, &k, sizeof(uint64_t)), 0);
  return k;
}

std::atomic<int> g_app_hits{0};
std::atomic<int> g_app_code{0};
void app_action(int sig, siginfo_t* si, void*) {
  if (sig == CR_SIGNUM) {
    g_app_code = si ? si->si_code : -1;
    ++g_app_hits;
  }
}
void app_plain(int sig) {
  if (sig == CR_SIGNUM) ++g_app_hits;
}

// Saves and restores the application's view of CR_SIGNUM around a test.
class LibcrSignals : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &saved_), 0); }
  void TearDown() override { sigaction(CR_SIGNUM, &saved_, nullptr); }
  struct sigaction saved_;
};

TEST_F(LibcrSignals, SigactionReadsBackExactlyWhatWasSet) {
  void* libcr_handler = kernel_disposition(CR_SIGNUM).handler;
  ASSERT_NE(libcr_handler, nullptr);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = app_action;
  sa.sa_flags = SA_SIGINFO | SA_RESTORER;
  sa.sa_restorer = reinterpret_cast<void (*)()>(0x1234);
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);
  struct sigaction old;
  ASSERT_EQ(sigaction(CR_SIGNUM, &sa, &old), 0);

  struct sigaction back;
  memset(&back, 0x77, sizeof back);
  ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &back), 0);
  EXPECT_EQ(back.sa_sigaction, app_action);
  EXPECT_EQ(back.sa_flags, SA_SIGINFO | SA_RESTORER);
  EXPECT_EQ(reinterpret_cast<void*>(back.sa_restorer), reinterpret_cast<void*>(0x1234));
  EXPECT_TRUE(sigismember(&back.sa_mask, SIGUSR2));
  EXPECT_FALSE(sigismember(&back.sa_mask, SIGUSR1));

  // The kernel keeps libcr's handler, with a working restorer.
  KernelSigaction k = kernel_disposition(CR_SIGNUM);
  EXPECT_EQ(k.handler, libcr_handler);
  EXPECT_NE(k.restorer, reinterpret_cast<void*>(0x1234));

  // The old value returned by the next call is the same.
  struct sigaction prev;
  ASSERT_EQ(sigaction(CR_SIGNUM, &saved_, &prev), 0);
  EXPECT_EQ(prev.sa_sigaction, app_action);
  EXPECT_EQ(prev.sa_flags, SA_SIGINFO | SA_RESTORER);
  EXPECT_EQ(reinterpret_cast<void*>(prev.sa_restorer), reinterpret_cast<void*>(0x1234));
}

TEST_F(LibcrSignals, KillReachesTheApplicationsHandler) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = app_action;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(CR_SIGNUM, &sa, nullptr), 0);
  g_app_hits = 0;
  ASSERT_EQ(kill(getpid(), CR_SIGNUM), 0);
  for (int i = 0; i < 1000 && g_app_hits == 0; ++i) usleep(1000);
  EXPECT_EQ(g_app_hits.load(), 1);
  EXPECT_EQ(g_app_code.load(), SI_USER);

  // A queued CR_SIGNUM that is not a request is the application's too.
  union sigval v;
  v.sival_int = 0x12345678;
  ASSERT_EQ(sigqueue(getpid(), CR_SIGNUM, v), 0);
  for (int i = 0; i < 1000 && g_app_hits < 2; ++i) usleep(1000);
  EXPECT_EQ(g_app_hits.load(), 2);
  EXPECT_EQ(g_app_code.load(), SI_QUEUE);

  // signal() installs a plain handler, also kept by libcr.
  ASSERT_NE(signal(CR_SIGNUM, app_plain), SIG_ERR);
  ASSERT_EQ(kill(getpid(), CR_SIGNUM), 0);
  for (int i = 0; i < 1000 && g_app_hits < 3; ++i) usleep(1000);
  EXPECT_EQ(g_app_hits.load(), 3);
  EXPECT_EQ(signal(CR_SIGNUM, SIG_IGN), app_plain);
  ASSERT_EQ(kill(getpid(), CR_SIGNUM), 0);  // ignored: the process survives
  usleep(20000);
  EXPECT_EQ(g_app_hits.load(), 3);
}

TEST_F(LibcrSignals, BlockingCrSignumIsIgnored) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, CR_SIGNUM);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(sigprocmask(SIG_BLOCK, &block, &old), 0);
  uint64_t now = 0;
  ASSERT_EQ(::syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &now, sizeof now), 0);
  EXPECT_EQ(now & (1ull << (CR_SIGNUM - 1)), 0u);  // not blocked
  EXPECT_NE(now & (1ull << (SIGUSR2 - 1)), 0u);    // the rest of the set is
  ASSERT_EQ(sigprocmask(SIG_SETMASK, &old, nullptr), 0);

  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
  ASSERT_EQ(::syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &now, sizeof now), 0);
  EXPECT_EQ(now & (1ull << (CR_SIGNUM - 1)), 0u);
  EXPECT_NE(now & (1ull << (SIGUSR2 - 1)), 0u);
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
}

TEST_F(LibcrSignals, OtherSignalsAreUntouched) {
  struct sigaction sa, old, back;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = app_plain;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  ASSERT_EQ(sigaction(SIGUSR2, nullptr, &back), 0);
  EXPECT_EQ(back.sa_handler, app_plain);
  EXPECT_EQ(kernel_disposition(SIGUSR2).handler, reinterpret_cast<void*>(app_plain));
  ASSERT_EQ(sigaction(SIGUSR2, &old, nullptr), 0);
}

}  // namespace
