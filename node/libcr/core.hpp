// libcr's signal-safe core: the process-wide state, per-thread records and the small
// primitives (futexes, raw system calls) every part of the library uses. This is the only
// place in crkit with global mutable state: a signal handler has nowhere else to find it.
#pragma once

#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// The public API keeps default visibility; everything else in libcr is hidden.
#pragma GCC visibility push(default)
#include "libcr.h"
#pragma GCC visibility pop
#include "libcr/control_block.h"
#include "libcr/sync_words.h"

#define CR_EXPORT __attribute__((visibility("default")))

namespace crkit::libcr {

// ---- primitives (all async-signal-safe; the atomics and futexes are in sync_words.h) ----
inline pid_t sys_gettid() {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}
inline pid_t sys_getpid() {
  return static_cast<pid_t>(::syscall(SYS_getpid));
}

// ---- callbacks ----
struct Callback {
  cr_callback_t fn;  // nullptr: disabled (cr_replace_callback with NULL)
  void* arg;
};
inline constexpr int kMaxSignalCallbacks = 256;  // per thread
inline constexpr int kMaxThreadCallbacks = 1024;
inline constexpr int kMaxThreads = 1024;
inline constexpr int kMaxHandles = 64;

// One callback running in a thread: BLCR nests them (cr_checkpoint() in callback i runs
// callback i-1, ...), so these form a stack through the running chain.
struct Level {
  int index;
  bool called;    // cr_checkpoint() was called in this callback
  bool returned;  // ... and has returned
  int result;
  Level* prev;
};

// One run of a callback list in one thread, for one request.
struct Chain {
  Callback* cbs;
  int n;
  bool thread_context;
  Level* top;  // the callback running now
  uint32_t seq;
  // What happens below the last callback: report to the process round, wait for the outcome.
  int (*bottom)(Chain&, int flags);
};

struct ThreadRec {
  pid_t tid;
  int next_client_id;
  int cs_depth;
  int persist;
  int hold;  // CR_HOLD_* for this thread (CR_HOLD_DFLT: the process's INIT setting)
  int n_sig_cbs;
  Callback sig_cbs[kMaxSignalCallbacks];
  Chain* chain;  // the chain running in this thread, or nullptr
  bool is_callback_thread;
  int slot;
  uint32_t in_use;  // records are reused, never unmapped (a handler may be reading one)
};

// The request being handled in this process (at most one at a time).
struct Round {
  uint32_t seq;                 // 0: none
  uint32_t queued;              // a request that came while this one ran
  uint32_t last_started;        // the last request a round was started for (stale signals)
  uint32_t state;               // CR_STATE_* (futex: entering critical sections waits on it)
  uint32_t driver_needed;       // seq waiting for a thread to leave its critical sections
  uint32_t phase_token;         // random, in the signal phase's signals (not forgeable)
  int32_t n_signaled;           // threads sent the signal phase ...
  pid_t signaled[kMaxThreads];  // ... their tids, 0 once they took it (or exited)
  uint32_t handles_redone;      // seq whose restart already replaced the handle descriptors
  int32_t arrivals;             // participants still to reach cr_checkpoint()
  int32_t departures;           // participants still to finish their callbacks
  int32_t flags;                // abort flags of all cr_checkpoint() calls (OR)
  int32_t code;                 // first user code of a *_FAILURE_CODE(v)
  cr_checkpoint_info info;
  char dest[kPathMax];
  cr_restart_info rinfo;
  char src[kPathMax];
};

// A request made from this process (cr_request_checkpoint/restart): the handle's state.
struct Handle {
  int fd;          // read end of the helper's report pipe; -1: free slot
  pid_t helper;    // the helper process (cr_checkpoint or cr_restart)
  bool restart;    // a restart request
  bool restarted;  // this process was restarted from the checkpoint the request made
  bool have_result;
  int rc;             // helper's result: 0 or an error code
  long value;         // cr_reap_restart: the restored root's pid
  uint32_t self_seq;  // the request's seq in this process's own block (0: not a target)
  char* log;          // malloc'ed messages
};

struct Process {
  ControlBlock* cb;
  int cb_fd;
  Kind kind;
  bool ready;  // the full library is initialized
  pid_t pid;

  ThreadRec* threads[kMaxThreads];

  Callback tc_cbs[kMaxThreadCallbacks];
  int n_tc_cbs;
  uint32_t tc_go;  // futex: seq for the callback thread to run, 0 = none
  bool tc_thread_started;
  pid_t tc_tid;

  uint32_t cs_count;  // futex: threads inside critical sections
  Round round;

  cr_hook_fn_t hooks[CR_NUM_HOOKS];
  int hold_init, hold_uninit;

  Handle handles[kMaxHandles];
  cr_spinlock_t handles_lock;
  cr_spinlock_t register_lock;

  struct sigaction app_action;  // the application's own disposition of CR_SIGNUM
  bool app_action_set;
};

extern Process g;

ThreadRec* self_rec();  // nullptr if this thread has not called cr_init()

// control.cpp
bool make_control_block(Kind kind);  // at load and in a fork child
void add_private_fd(int fd);
void remove_private_fd(int fd);

// checkpoint_round.cpp
void on_request_signal(uint32_t seq);  // from the signal handler
void on_phase_signal(uint32_t seq);
void leave_cs_hook(ThreadRec* rec);  // cr_leave_cs left the last section of this thread
bool drive_if_free(uint32_t seq);
void sections_left();  // the section count dropped to zero: run a deferred request
int run_chain(Chain& c, int from);
void* callback_thread_main(void*);
void install_handler();
void restarted_handles();  // requests.cpp: a restart happened

// sigaction_interpose.cpp
int real_sigaction(int sig, const struct sigaction* act, struct sigaction* old);
int real_sigprocmask(int how, const sigset_t* set, sigset_t* old);

inline int fail_errno(int e) {
  errno = e;
  return -1;
}

}  // namespace crkit::libcr
