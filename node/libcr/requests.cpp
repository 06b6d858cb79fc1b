// Requests made from inside a process: cr_request_checkpoint() and cr_request_restart() start
// a helper (crkit's cr_checkpoint or cr_restart, which do the work with the ptrace rights of
// this process's user) and return a handle: the read end of the pipe on which the helper
// reports "STARTED <seq>" once every target has its request, then "RESULT <code> <value>" and
// its messages when done. A request that includes the calling process waits until this
// process has been checkpointed. The handle descriptors are libcr's own: a checkpoint leaves
// them out and a restarted copy gets readable ones in their place, whose reap says
// CR_ERESTARTED.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "libcr/core.hpp"

extern char** environ;

namespace crkit::libcr {
namespace {

Handle* find_handle(unsigned long h) {
  for (auto& x : g.handles)
    if (x.fd >= 0 && static_cast<unsigned long>(x.fd) == h) return &x;
  return nullptr;
}

// Where crkit's tools are: $CRKIT_BINDIR, the install directory, or the build tree.
bool tool_path(const char* name, char* out, size_t n) {
  // (secure_getenv: a set-id program must not run a tool of the caller's choosing)
  const char* dirs[] = {secure_getenv("CRKIT_BINDIR"), CRKIT_INSTALL_BINDIR, CRKIT_BUILD_BINDIR};
  for (const char* d : dirs) {
    if (!d || !*d) continue;
    snprintf(out, n, "%s/%s", d, name);
    if (::access(out, X_OK) == 0) return true;
  }
  return false;
}

struct Args {
  char* v[64];
  char store[64][PATH_MAX + 32];
  int n = 0;
  void add(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (n >= 63) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(store[n], sizeof store[n], fmt, ap);
    va_end(ap);
    v[n] = store[n];
    v[++n] = nullptr;
  }
};

// Starts the helper with the report pipe's write end and keep_fd (the context file) open.
// exit_signal 0 keeps the helper out of the application's wait(); a restart helper needs
// SIGCHLD, as the restored processes it makes our children inherit it.
int spawn(const char* tool, Args& a, int keep_fd, int exit_signal, Handle** out) {
  char path[PATH_MAX];
  if (!tool_path(tool, path, sizeof path)) return fail_errno(ENOENT);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return -1;
  char report[32];
  snprintf(report, sizeof report, "--libcr-report=%d", p[1]);
  // argv[0], the report option, then the caller's arguments.
  char* argv[70];
  int k = 0;
  argv[k++] = path;
  argv[k++] = report;
  for (int i = 0; i < a.n; ++i) argv[k++] = a.v[i];
  argv[k] = nullptr;

  cr_spinlock_lock(&g.handles_lock);
  Handle* h = nullptr;
  for (auto& x : g.handles)
    if (x.fd < 0) {
      h = &x;
      break;
    }
  if (!h) {
    cr_spinlock_unlock(&g.handles_lock);
    ::close(p[0]);
    ::close(p[1]);
    return fail_errno(EAGAIN);
  }
  memset(h, 0, sizeof *h);
  h->fd = p[0];
  add_private_fd(p[0]);
  cr_spinlock_unlock(&g.handles_lock);

  struct clone_args ca;
  memset(&ca, 0, sizeof ca);
  ca.exit_signal = static_cast<uint64_t>(exit_signal);
  long pid = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (pid == 0) {
    // Marked as libcr's helper at once (the block is shared with the parent until exec), so
    // that no checkpoint takes it for a member.
    pid_t self = sys_getpid();
    for (auto& slot : g.cb->helpers)
      if (cas(&slot, 0, self)) break;
    ::syscall(SYS_fcntl, p[1], F_SETFD, 0);
    if (keep_fd >= 0) ::syscall(SYS_fcntl, keep_fd, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof(uint64_t));
    ::syscall(SYS_execve, path, argv, environ);
    char msg[PATH_MAX + 64];
    int e = errno;
    int len = snprintf(msg, sizeof msg, "RESULT %d 0\ncannot run %s: %s\n", e, path, strerror(e));
    ::syscall(SYS_write, p[1], msg, len);
    ::syscall(SYS_exit, 127);
  }
  ::close(p[1]);
  if (pid < 0) {
    int e = errno;
    cr_spinlock_lock(&g.handles_lock);
    remove_private_fd(p[0]);
    ::close(p[0]);
    h->fd = -1;
    cr_spinlock_unlock(&g.handles_lock);
    return fail_errno(e);
  }
  h->helper = static_cast<pid_t>(pid);
  *out = h;
  return 0;
}

// Reads what is there (block: wait for something first); true at end of file (the helper
// is done).
bool read_more(Handle* h, bool block) {
  char tmp[4096];
  for (;;) {
    if (!block) {
      struct pollfd pf = {h->fd, POLLIN, 0};
      int r = ::poll(&pf, 1, 0);
      if (r <= 0) return false;
    }
    ssize_t n = ::read(h->fd, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) {
      if (h->restarted) return true;
      continue;
    }
    if (n <= 0) return true;
    size_t old = h->log ? strlen(h->log) : 0;
    char* grown = static_cast<char*>(realloc(h->log, old + static_cast<size_t>(n) + 1));
    if (!grown) return true;
    memcpy(grown + old, tmp, static_cast<size_t>(n));
    grown[old + static_cast<size_t>(n)] = 0;
    h->log = grown;
    block = false;  // what else is there, without waiting
  }
}

// Parses "STARTED n" and "RESULT code value" lines; the rest is messages.
void parse(Handle* h) {
  if (!h->log) return;
  char* s = strstr(h->log, "STARTED ");
  if (s && (s == h->log || s[-1] == '\n'))
    h->self_seq = static_cast<uint32_t>(strtoul(s + 8, nullptr, 10));
  char* r = strstr(h->log, "RESULT ");
  if (r && (r == h->log || r[-1] == '\n')) {
    char* end = nullptr;
    h->rc = static_cast<int>(strtol(r + 7, &end, 10));
    h->value = strtol(end, nullptr, 10);
    h->have_result = true;
  }
}

bool started(Handle* h) {
  return h->log && strstr(h->log, "STARTED ") != nullptr;
}

// The messages part of the report (after the RESULT line), for cr_log_*.
const char* messages(Handle* h) {
  if (!h->log) return "";
  char* r = strstr(h->log, "RESULT ");
  if (!r) return "";
  char* nl = strchr(r, '\n');
  return nl ? nl + 1 : "";
}

void free_handle(Handle* h, bool close_fd) {
  for (auto& slot : g.cb->helpers)
    if (h->helper > 0 && cas(&slot, h->helper, 0)) break;
  cr_spinlock_lock(&g.handles_lock);
  remove_private_fd(h->fd);
  if (close_fd) ::close(h->fd);
  free(h->log);
  h->log = nullptr;
  h->fd = -1;
  cr_spinlock_unlock(&g.handles_lock);
}

// Waits for the STARTED or RESULT line. Returns 0, or -1 with errno (early failure).
int wait_started(Handle* h, bool async_err) {
  while (!started(h)) {
    bool eof = read_more(h, true);
    parse(h);
    if (eof || h->have_result) break;
  }
  parse(h);
  if (!started(h) && h->have_result && h->rc != 0 && !async_err) {
    int e = h->rc;
    read_more(h, true);
    ::syscall(SYS_wait4, h->helper, nullptr, __WALL, nullptr);
    free_handle(h, true);
    return fail_errno(e);
  }
  return 0;
}

// The request includes this process: wait until it has been through the checkpoint.
void wait_own_checkpoint(Handle* h) {
  uint32_t seq = h->self_seq;
  if (!seq || !g.cb) return;
  for (;;) {
    uint32_t d = load(&g.cb->done_seq);
    if (static_cast<int32_t>(d - seq) >= 0) return;  // (in a restarted copy too)
    if (h->have_result) return;
    futex_wait(&g.cb->done_seq, d, 100, true);
    if (!h->have_result && read_more(h, false)) parse(h);
  }
}

bool is_ancestor_or_self(pid_t target) {
  pid_t p = g.pid;
  for (int depth = 0; p > 1 && depth < 4096; ++depth) {
    if (p == target) return true;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", p);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    char* rp = strrchr(buf, ')');
    if (!rp) return false;
    char state;
    int ppid;
    if (sscanf(rp + 1, " %c %d", &state, &ppid) != 2) return false;
    p = ppid;
  }
  return p == target;
}

int wait_handle(unsigned long* hp, struct timeval* tv) {
  if (!hp) return fail_errno(EINVAL);
  Handle* h = find_handle(*hp);
  if (!h) return fail_errno(EINVAL);
  if (h->restarted || h->have_result) return 1;
  long ms = tv ? tv->tv_sec * 1000 + tv->tv_usec / 1000 : -1;
  struct pollfd pf = {h->fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&pf, 1, static_cast<int>(ms));
    if (r < 0) return h->restarted ? 1 : -1;  // EINTR as select() would
    if (r == 0) return 0;
    if (read_more(h, false) || h->restarted) {
      parse(h);
      return 1;
    }
  }
}

int log_handle(unsigned long* hp, unsigned len, char* msg) {
  if (!hp) return fail_errno(EINVAL);
  Handle* h = find_handle(*hp);
  if (!h) return fail_errno(EINVAL);
  const char* m = messages(h);
  size_t need = strlen(m);
  if (need == 0) return 0;
  if (len > 0 && msg) {
    size_t n = need < len - 1 ? need : len - 1;
    memcpy(msg, m, n);
    msg[n] = 0;
  }
  return static_cast<int>(need + 1);
}

int reap_handle(unsigned long* hp, bool restart) {
  if (!hp) return fail_errno(EINVAL);
  Handle* h = find_handle(*hp);
  if (!h || h->restart != restart) return fail_errno(EINVAL);
  if (h->restarted) {
    free_handle(h, true);
    return fail_errno(CR_ERESTARTED);
  }
  if (!h->have_result) {
    if (!read_more(h, false)) return fail_errno(EAGAIN);
    parse(h);
  }
  ::syscall(SYS_wait4, h->helper, nullptr, __WALL, nullptr);
  int rc = h->rc;
  long value = h->value;
  bool have = h->have_result;
  free_handle(h, true);
  if (!have) return fail_errno(EIO);  // the helper died without a word
  if (rc) return fail_errno(rc);
  return restart ? static_cast<int>(value) : 1;
}

int poll_handle(unsigned long* hp, struct timeval* tv, char** msg_p, bool restart) {
  if (msg_p) *msg_p = nullptr;
  int r = wait_handle(hp, tv);
  if (r < 0) return CR_POLL_CHKPT_ERR_PRE;
  if (r == 0) return 0;
  if (msg_p) {
    int n = log_handle(hp, 0, nullptr);
    if (n < 0) return CR_POLL_CHKPT_ERR_LOG;
    if (n > 0) {
      *msg_p = static_cast<char*>(malloc(static_cast<size_t>(n)));
      if (!*msg_p) return CR_POLL_CHKPT_ERR_LOG;
      log_handle(hp, static_cast<unsigned>(n), *msg_p);
    }
  }
  r = reap_handle(hp, restart);
  if (r < 0) return CR_POLL_CHKPT_ERR_POST;
  return r;
}

}  // namespace

// A restart happened (called from the round's end, in a signal handler): every request of
// ours is over as far as this copy is concerned; its descriptor number gets a readable pipe.
void restarted_handles() {
  for (auto& slot : g.cb->helpers) store(&slot, 0);  // (pids of the old run)
  for (auto& h : g.handles) {
    if (h.fd < 0) continue;
    h.restarted = true;
    int p[2];
    if (::syscall(SYS_pipe2, p, O_CLOEXEC) == 0) {
      char c = 1;
      ::syscall(SYS_write, p[1], &c, 1);
      ::syscall(SYS_dup3, p[0], h.fd, O_CLOEXEC);
      ::syscall(SYS_close, p[0]);
      ::syscall(SYS_close, p[1]);
    }
  }
}

}  // namespace crkit::libcr

using namespace crkit::libcr;

extern "C" {

CR_EXPORT int cr_request_checkpoint(cr_checkpoint_args_t* a, cr_checkpoint_handle_t* handle) {
  if (!g.ready || !g.cb) return fail_errno(ENOSYS);
  if (!a || !handle || a->cr_version != CR_CHECKPOINT_ARGS_VERSION) return fail_errno(EINVAL);
  if (a->cr_scope < CR_SCOPE_PROC || a->cr_scope > CR_SCOPE_TREE || a->cr_target < 0)
    return fail_errno(EINVAL);
  const unsigned known = CR_CHKPT_PROHIBIT_SELF | CR_CHKPT_PTRACED_ALLOW | CR_CHKPT_PTRACED_SKIP |
                         CR_CHKPT_PTRACER_SKIP | CR_CHKPT_ASYNC_ERR | CR_CHKPT_DUMP_ALL;
  if ((a->cr_flags & ~known) || a->cr_signal <= -_NSIG || a->cr_signal >= _NSIG)
    return fail_errno(EINVAL);
  if (a->cr_fd != CR_DEST_CWD) {
    if (a->cr_fd < 0 || ::fcntl(a->cr_fd, F_GETFD) < 0) return fail_errno(EBADF);
    struct stat st;
    if (::fstat(a->cr_fd, &st) == 0 && S_ISDIR(st.st_mode)) return fail_errno(EISDIR);
  }
  pid_t id = a->cr_target;
  if (id == 0)
    id = a->cr_scope == CR_SCOPE_PGRP   ? ::getpgrp()
         : a->cr_scope == CR_SCOPE_SESS ? ::getsid(0)
                                        : g.pid;
  bool self = false;
  switch (a->cr_scope) {
    case CR_SCOPE_PROC:
      self = id == g.pid;
      break;
    case CR_SCOPE_PGRP:
      self = id == ::getpgrp();
      break;
    case CR_SCOPE_SESS:
      self = id == ::getsid(0);
      break;
    case CR_SCOPE_TREE:
      self = is_ancestor_or_self(id);
      break;
  }
  if (self && (a->cr_flags & CR_CHKPT_PROHIBIT_SELF)) return fail_errno(EDEADLK);
  ThreadRec* rec = self_rec();
  if (self && rec && (rec->chain || rec->cs_depth > 0)) return fail_errno(EDEADLK);
  if (self && load(&g.round.seq)) return fail_errno(EBUSY);

  Args args;
  args.add("--libcr-requester=%d", g.pid);
  args.add("-q");
  args.add("%s", a->cr_scope == CR_SCOPE_PROC   ? "--pid"
                 : a->cr_scope == CR_SCOPE_PGRP ? "--group"
                 : a->cr_scope == CR_SCOPE_SESS ? "--session"
                                                : "--tree");
  if (a->cr_fd == CR_DEST_CWD)
    args.add("--cwd");
  else
    args.add("--fd=%d", a->cr_fd);
  if (a->cr_signal > 0) args.add("--signal=%d", a->cr_signal);
  if (a->cr_timeout) args.add("--time=%u", a->cr_timeout);
  if (a->cr_flags & CR_CHKPT_PTRACED_ALLOW) args.add("--ptraced-allow");
  if (a->cr_flags & CR_CHKPT_PTRACED_SKIP) args.add("--ptraced-skip");
  if (a->cr_flags & CR_CHKPT_PTRACER_SKIP) args.add("--ptracer-skip");
  args.add("%d", id);
  Handle* h = nullptr;
  if (spawn("cr_checkpoint", args, a->cr_fd, 0, &h) < 0) return -1;
  if (wait_started(h, (a->cr_flags & CR_CHKPT_ASYNC_ERR) != 0) < 0) return -1;
  *handle = static_cast<cr_checkpoint_handle_t>(h->fd);
  if (self) wait_own_checkpoint(h);
  return 0;
}

CR_EXPORT int cr_wait_checkpoint(cr_checkpoint_handle_t* h, struct timeval* tv) {
  return wait_handle(h, tv);
}
CR_EXPORT int cr_log_checkpoint(cr_checkpoint_handle_t* h, unsigned int len, char* msg) {
  return log_handle(h, len, msg);
}
CR_EXPORT int cr_reap_checkpoint(cr_checkpoint_handle_t* h) {
  return reap_handle(h, false);
}
CR_EXPORT int cr_poll_checkpoint_msg(cr_checkpoint_handle_t* h, struct timeval* tv, char** msg) {
  return poll_handle(h, tv, msg, false);
}
CR_EXPORT int cr_poll_checkpoint(cr_checkpoint_handle_t* h, struct timeval* tv) {
  return poll_handle(h, tv, nullptr, false);
}

CR_EXPORT int cr_request_restart(cr_restart_args_t* a, cr_restart_handle_t* handle) {
  if (!g.ready || !g.cb) return fail_errno(ENOSYS);
  if (!a || !handle || a->cr_version != CR_RESTART_ARGS_VERSION) return fail_errno(EINVAL);
  const unsigned known =
      CR_RSTRT_ASYNC_ERR | CR_RSTRT_RESTORE_PID | CR_RSTRT_RESTORE_PGID | CR_RSTRT_RESTORE_SID;
  if ((a->cr_flags & ~known) || a->cr_signal < 0 || a->cr_signal >= _NSIG)
    return fail_errno(EINVAL);
  if (a->cr_fd < 0 || ::fcntl(a->cr_fd, F_GETFD) < 0) return fail_errno(EBADF);
  if (a->cr_relocate && a->cr_relocate->count > CR_MAX_RSTRT_RELOC) return fail_errno(EINVAL);
  Args args;
  args.add("--libcr-requester=%d", g.pid);
  args.add("--libcr-sibling");
  args.add("-q");
  args.add("%s", (a->cr_flags & CR_RSTRT_RESTORE_PID) ? "--restore-pid" : "--no-restore-pid");
  if (a->cr_flags & CR_RSTRT_RESTORE_PGID) args.add("--restore-pgid");
  if (a->cr_flags & CR_RSTRT_RESTORE_SID) args.add("--restore-sid");
  if (a->cr_signal > 0) args.add("--signal=%d", a->cr_signal);
  if (a->cr_relocate)
    for (unsigned i = 0; i < a->cr_relocate->count; ++i) {
      const auto& pr = a->cr_relocate->path[i];
      if (!pr.oldpath || !pr.newpath) return fail_errno(EINVAL);
      args.add("--relocate=%s=%s", pr.oldpath, pr.newpath);
    }
  args.add("--fd=%d", a->cr_fd);
  Handle* h = nullptr;
  if (spawn("cr_restart", args, a->cr_fd, SIGCHLD, &h) < 0) return -1;
  h->restart = true;
  if (wait_started(h, (a->cr_flags & CR_RSTRT_ASYNC_ERR) != 0) < 0) return -1;
  *handle = static_cast<cr_restart_handle_t>(h->fd);
  return 0;
}

CR_EXPORT int cr_wait_restart(cr_restart_handle_t* h, struct timeval* tv) {
  return wait_handle(h, tv);
}
CR_EXPORT int cr_log_restart(cr_restart_handle_t* h, unsigned int len, char* msg) {
  return log_handle(h, len, msg);
}
CR_EXPORT int cr_reap_restart(cr_restart_handle_t* h) {
  return reap_handle(h, true);
}
CR_EXPORT int cr_poll_restart_msg(cr_restart_handle_t* h, struct timeval* tv, char** msg) {
  return poll_handle(h, tv, msg, true);
}
CR_EXPORT int cr_poll_restart(cr_restart_handle_t* h, struct timeval* tv) {
  return poll_handle(h, tv, nullptr, true);
}

// ---- deprecated BLCR entry points: a checkpoint of this process ----

static void request_self(int fd) {
  cr_checkpoint_args_t a;
  cri_init_checkpoint_args_t(CR_CHECKPOINT_ARGS_VERSION, &a);
  a.cr_scope = CR_SCOPE_PROC;
  a.cr_fd = fd;
  cr_checkpoint_handle_t h;
  if (cr_request_checkpoint(&a, &h) == 0) (void)cr_poll_checkpoint(&h, nullptr);
}

CR_EXPORT void cr_request_fd(int fd) {
  request_self(fd);
}

CR_EXPORT void cr_request_file(const char* path) {
  if (!path) return;
  int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400);
  if (fd < 0) return;
  request_self(fd);
  ::close(fd);
}

CR_EXPORT void cr_request(void) {
  request_self(CR_DEST_CWD);
}

}  // extern "C"
