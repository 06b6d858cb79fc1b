// libcr through real checkpoints: the test process checkpoints itself (cr_request_checkpoint,
// scope CR_SCOPE_PROC, target 0, cr_fd a temporary file), a forked child, or an exec'ed
// program, with crkit's cr_checkpoint/cr_restart as the helpers ($CRKIT_BINDIR). Covered:
// the request/handle functions, callback order and context, what callbacks may call and what
// they see, failures and omission requested by callbacks, critical sections against a
// pending checkpoint, hooks, CR_SIGNUM dispositions, forwarding, the deprecated requests and
// restarts.
//
// libcr cannot unregister callbacks: every test disables what it registered (cr_replace_callback
// with NULL) when it ends and later tests reuse those slots, so the tests also pass when the
// whole executable runs in one process (even with --gtest_repeat). Callbacks run in signal
// handlers: they record into fixed arrays and atomics. Tests whose callbacks must not run in
// this process (permanent failure kills the job, a deadlock) run in a forked child.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "libcr.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000  // the kernel's flag; glibc does not export it
#endif

namespace {

// Outside ctest (which sets it), the helpers are this build tree's.
[[maybe_unused]] const bool g_bindir_set = setenv("CRKIT_BINDIR", CRKIT_TEST_BINDIR, 0) == 0;

pid_t tid() {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

int64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

// Waits up to ms for pred(); true if it became true.
bool eventually(const std::function<bool()>& pred, int ms = 10000) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    sleep_ms(1);
  }
  return pred();
}

// ---- what callbacks and hooks saw (async-signal-safe recording) ----

enum What : int {
  kBefore = 1,  // a callback was entered (value: its tag)
  kAfter,       // its cr_checkpoint() returned (value: the return value)
  kHook,        // a hook ran (value: the event)
};

struct Event {
  int what;
  int tag;
  int value;
  pid_t tid;
  int64_t ns;
};

constexpr int kMaxEvents = 256;
Event g_events[kMaxEvents];
std::atomic<int> g_n_events{0};

void record(int what, int tag, int value) {
  int i = g_n_events.fetch_add(1);
  if (i < kMaxEvents) g_events[i] = Event{what, tag, value, tid(), now_ns()};
}

std::string describe_events();

std::vector<Event> events() {
  int n = std::min(g_n_events.load(), kMaxEvents);
  return std::vector<Event>(g_events, g_events + n);
}

std::string describe_events() {
  std::string out;
  for (const Event& e : events())
    out += "  what " + std::to_string(e.what) + " tag " + std::to_string(e.tag) + " value " +
           std::to_string(e.value) + " tid " + std::to_string(e.tid) + "\n";
  return out;
}

// Index of the first event matching, or -1.
int find_event(int what, int tag) {
  auto ev = events();
  for (size_t i = 0; i < ev.size(); ++i)
    if (ev[i].what == what && ev[i].tag == tag) return static_cast<int>(i);
  return -1;
}

int count_events(int what, int tag) {
  int n = 0;
  for (const Event& e : events())
    if (e.what == what && e.tag == tag) ++n;
  return n;
}

// The plain callback: records, calls cr_checkpoint(0), records its result.
int cb_record(void* arg) {
  int tag = static_cast<int>(reinterpret_cast<intptr_t>(arg));
  record(kBefore, tag, 0);
  int r = cr_checkpoint(CR_CHECKPOINT_READY);
  record(kAfter, tag, r);
  return 0;
}

void* tag_arg(int tag) {
  return reinterpret_cast<void*>(static_cast<intptr_t>(tag));
}

void hook_record(cr_hook_event_t ev) {
  record(kHook, static_cast<int>(ev), static_cast<int>(ev));
}

// ---- temporary files ----

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/crkit-libcr-test-XXXXXX";
    char* d = mkdtemp(tmpl);
    if (d) path_ = d;
  }
  ~TempDir() {
    if (path_.empty()) return;
    if (DIR* d = opendir(path_.c_str())) {
      while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") ::unlink((path_ + "/" + n).c_str());
      }
      closedir(d);
    }
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An image file in a TempDir, open for writing (cr_fd).
class ImageFile {
 public:
  explicit ImageFile(const TempDir& dir, const char* name = "image") {
    path_ = dir.path() + "/" + name;
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  }
  ~ImageFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  off_t size() const {
    struct stat st;
    return ::stat(path_.c_str(), &st) == 0 ? st.st_size : -1;
  }
  std::string canonical() const {
    char buf[PATH_MAX];
    return ::realpath(path_.c_str(), buf) ? std::string(buf) : std::string();
  }

 private:
  std::string path_;
  int fd_ = -1;
};

cr_checkpoint_args_t self_args(int fd, unsigned flags = 0, int signal = 0) {
  cr_checkpoint_args_t a;
  cr_initialize_checkpoint_args_t(&a);
  a.cr_scope = CR_SCOPE_PROC;
  a.cr_target = 0;
  a.cr_fd = fd;
  a.cr_flags = flags;
  a.cr_signal = signal;
  return a;
}

struct Outcome {
  int request = 0;  // cr_request_checkpoint's return value
  int request_errno = 0;
  int poll = 0;  // cr_poll_checkpoint's (if the request succeeded)
  int poll_errno = 0;
};

// A checkpoint of pid (0: this process) into fd: request, then poll without a time limit.
Outcome checkpoint(int fd, pid_t pid = 0, unsigned flags = 0, int signal = 0) {
  Outcome o;
  cr_checkpoint_args_t a = self_args(fd, flags, signal);
  a.cr_target = pid;
  cr_checkpoint_handle_t h = 0;
  errno = 0;
  o.request = cr_request_checkpoint(&a, &h);
  o.request_errno = errno;
  if (o.request != 0) return o;
  // A signal (cr_signal, say) may interrupt the wait: BLCR's poll then fails with EINTR
  // (CR_POLL_CHKPT_ERR_PRE) and the caller polls again.
  do {
    errno = 0;
    o.poll = cr_poll_checkpoint(&h, nullptr);
    o.poll_errno = errno;
  } while (o.poll == CR_POLL_CHKPT_ERR_PRE && o.poll_errno == EINTR);
  return o;
}

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  return os << "request " << o.request << " (" << cr_strerror(o.request_errno) << "), poll "
            << o.poll << " (" << cr_strerror(o.poll_errno) << ")";
}

// The fixture: cr_init in the test's (main) thread, a clean event record, and every callback
// registered through it disabled, every hook registered through it restored, at the end.
class Libcr : public ::testing::Test {
 protected:
  void SetUp() override {
    id_ = cr_init();
    ASSERT_GE(id_, 0);
    ASSERT_FALSE(dir_.path().empty());
    g_n_events = 0;
  }
  void TearDown() override {
    for (auto [id, ctx] : callbacks_) {
      // (EBUSY while a checkpoint round is still going on: see RoundIsOverWhenTheRequestReturns)
      bool off = eventually([&] { return cr_replace_callback(id, nullptr, nullptr, ctx) == 0; });
      EXPECT_TRUE(off) << "could not disable callback " << std::hex << id << ": "
                       << cr_strerror(errno);
      if (off) free_slots(ctx).push_back(id);
    }
    for (auto [ev, fn] : hooks_) cr_register_hook(ev, fn);
  }
  // Registers fn, or puts it into a slot an earlier test disabled: libcr keeps at most 256
  // signal-context callbacks per thread, and --gtest_repeat would run out. The lowest free
  // slot first, so that callbacks keep their registration order (they run last first).
  cr_callback_id_t reg(cr_callback_t fn, void* arg, int ctx) {
    std::vector<cr_callback_id_t>& pool = free_slots(ctx);
    cr_callback_id_t id = -1;
    if (!pool.empty()) {
      auto lowest = std::min_element(pool.begin(), pool.end());
      id = *lowest;
      pool.erase(lowest);
      EXPECT_EQ(cr_replace_callback(id, fn, arg, ctx), 0) << cr_strerror(errno);
    } else {
      id = cr_register_callback(fn, arg, ctx);
      EXPECT_GE(id, 0) << cr_strerror(errno);
    }
    if (id >= 0) callbacks_.emplace_back(id, ctx);
    return id;
  }
  // (Signal-context slots are the main thread's: every test body runs there.)
  static std::vector<cr_callback_id_t>& free_slots(int ctx) {
    static std::vector<cr_callback_id_t> pools[2];
    return pools[ctx == CR_THREAD_CONTEXT ? 1 : 0];
  }
  cr_callback_id_t reg_record(int tag, int ctx) { return reg(cb_record, tag_arg(tag), ctx); }
  void hook(cr_hook_event_t ev, cr_hook_fn_t fn) {
    cr_hook_fn_t prev = cr_register_hook(ev, fn);
    ASSERT_NE(prev, CR_HOOK_FN_ERROR);
    hooks_.emplace_back(ev, prev);
  }

  void no_callbacks_hook(bool call_cr_init);

  cr_client_id_t id_ = -1;
  TempDir dir_;
  std::vector<std::pair<cr_callback_id_t, int>> callbacks_;
  std::vector<std::pair<cr_hook_event_t, cr_hook_fn_t>> hooks_;
};

// Memory shared with forked children (MAP_SHARED), for what their callbacks saw.
struct Shared {
  std::atomic<int> runs;
  std::atomic<int> checkpoint_rc;
  std::atomic<int> requester;
  std::atomic<int> target;
  std::atomic<int> delay_ms;
};

class SharedPage {
 public:
  SharedPage() {
    void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    s_ = p == MAP_FAILED ? nullptr : new (p) Shared();
  }
  ~SharedPage() {
    if (s_) munmap(s_, 4096);
  }
  Shared* operator->() const { return s_; }
  Shared* get() const { return s_; }

 private:
  Shared* s_ = nullptr;
};

Shared* g_child_shared = nullptr;  // in the child: where its callback reports
int cb_child(void*) {
  Shared* s = g_child_shared;
  if (const struct cr_checkpoint_info* ci = cr_get_checkpoint_info()) {
    s->requester = ci->requester;
    s->target = ci->target;
  }
  sleep_ms(s->delay_ms);
  s->checkpoint_rc = cr_checkpoint(0);
  ++s->runs;
  return 0;
}

// A forked child with a signal-context callback (cb_child) that waits to be checkpointed.
class LibcrChild {
 public:
  explicit LibcrChild(Shared* shared) {
    int p[2];
    if (pipe(p) < 0) return;
    fflush(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      ::close(p[0]);
      g_child_shared = shared;
      char ok = cr_register_callback(cb_child, nullptr, CR_SIGNAL_CONTEXT) >= 0 ? 'y' : 'n';
      (void)!::write(p[1], &ok, 1);
      ::close(p[1]);
      for (;;) pause();
    }
    ::close(p[1]);
    char ok = 0;
    if (pid_ > 0 && ::read(p[0], &ok, 1) == 1 && ok == 'y') ready_ = true;
    ::close(p[0]);
  }
  ~LibcrChild() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  bool ready() const { return ready_; }

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
};

void Libcr::no_callbacks_hook(bool call_cr_init) {
  hook(CR_HOOK_CONT_NO_CALLBACKS, hook_record);
  std::atomic<bool> stop{false};
  std::atomic<pid_t> worker_tid{0};
  std::thread worker([&] {
    if (call_cr_init) cr_init();
    worker_tid = tid();
    while (!stop) sleep_ms(1);
  });
  while (!worker_tid) sleep_ms(1);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  stop = true;
  worker.join();
  EXPECT_GT(o.poll, 0) << o;
  bool seen = false;
  for (const Event& e : events())
    if (e.what == kHook && e.tag == CR_HOOK_CONT_NO_CALLBACKS && e.tid == worker_tid) seen = true;
  EXPECT_TRUE(seen) << "CR_HOOK_CONT_NO_CALLBACKS did not run in the thread without callbacks ("
                    << (call_cr_init ? "after cr_init" : "it never called cr_init") << ")";
}

// ---- requests and handles ----

TEST_F(Libcr, SelfCheckpointSucceedsAndWritesTheImage) {
  ImageFile img(dir_);
  ASSERT_GE(img.fd(), 0);
  Outcome o = checkpoint(img.fd());
  EXPECT_EQ(o.request, 0) << o;
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_GT(img.size(), 4096) << img.path();
  EXPECT_EQ(cr_status(), CR_STATE_IDLE);
}

TEST_F(Libcr, TwoCheckpointsInARow) {
  ImageFile a(dir_, "a"), b(dir_, "b");
  Outcome o1 = checkpoint(a.fd());
  EXPECT_GT(o1.poll, 0) << o1;
  Outcome o2 = checkpoint(b.fd());
  EXPECT_GT(o2.poll, 0) << o2;
  EXPECT_GT(a.size(), 0);
  EXPECT_GT(b.size(), 0);
}

// When a self-request returns, this process's checkpoint is over: the state is IDLE again and
// what is refused during a checkpoint (thread-context registration, another self-request)
// works at once.
TEST_F(Libcr, RoundIsOverWhenTheRequestReturns) {
  cr_callback_id_t t = reg_record(11, CR_THREAD_CONTEXT);
  reg_record(1, CR_SIGNAL_CONTEXT);
  int not_idle = 0, busy_replace = 0, busy_request = 0;
  std::string busy_msg;
  for (int i = 0; i < 30; ++i) {
    ImageFile img(dir_, ("round" + std::to_string(i)).c_str());
    cr_checkpoint_args_t a = self_args(img.fd());
    cr_checkpoint_handle_t h = 0;
    ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
    if (cr_status() != CR_STATE_IDLE) ++not_idle;
    if (cr_replace_callback(t, cb_record, tag_arg(11), CR_THREAD_CONTEXT) != 0) ++busy_replace;
    cr_poll_checkpoint(&h, nullptr);
    ::unlink(img.path().c_str());
    // A second request right after the first one returned.
    ImageFile img2(dir_, ("next" + std::to_string(i)).c_str());
    cr_checkpoint_args_t b = self_args(img2.fd());
    ASSERT_EQ(cr_request_checkpoint(&b, &h), 0) << cr_strerror(errno);
    cr_checkpoint_args_t c = self_args(img2.fd(), CR_CHKPT_ASYNC_ERR);  // errors at reap
    cr_checkpoint_handle_t h3 = 0;
    errno = 0;
    if (cr_request_checkpoint(&c, &h3) != 0) {
      if (errno == EBUSY) ++busy_request;
      busy_msg = "request: " + std::string(cr_strerror(errno));
    } else {
      char* msg = nullptr;
      errno = 0;
      if (cr_poll_checkpoint_msg(&h3, nullptr, &msg) < 0 && errno == EBUSY) {
        ++busy_request;
        busy_msg = msg ? msg : "";
      }
      free(msg);
    }
    cr_poll_checkpoint(&h, nullptr);
    ::unlink(img2.path().c_str());
  }
  EXPECT_EQ(not_idle, 0) << "cr_status() != IDLE right after the self-request returned";
  EXPECT_EQ(busy_replace, 0) << "cr_replace_callback(thread context) EBUSY right after";
  EXPECT_EQ(busy_request, 0) << "a self-request EBUSY right after the previous one returned: "
                             << busy_msg;
}

TEST_F(Libcr, HandleIsASelectableDescriptorAndWaitLogReapWork) {
  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  cr_checkpoint_handle_t h = 0;
  ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
  int fd = static_cast<int>(h);
  ASSERT_GE(::fcntl(fd, F_GETFD), 0) << "the handle is not an open descriptor";

  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(fd, &rd);
  struct timeval tv = {20, 0};
  EXPECT_EQ(select(fd + 1, &rd, nullptr, nullptr, &tv), 1);
  EXPECT_TRUE(FD_ISSET(fd, &rd));

  EXPECT_GT(cr_wait_checkpoint(&h, nullptr), 0);
  struct timeval zero = {0, 0};
  EXPECT_GT(cr_wait_checkpoint(&h, &zero), 0);  // done stays done

  // Size query, then the messages; non-destructive.
  int need = cr_log_checkpoint(&h, 0, nullptr);
  ASSERT_GT(need, 1);
  std::vector<char> buf(static_cast<size_t>(need), 'x');
  EXPECT_EQ(cr_log_checkpoint(&h, static_cast<unsigned>(need), buf.data()), need);
  EXPECT_EQ(strlen(buf.data()), static_cast<size_t>(need - 1));
  EXPECT_EQ(cr_log_checkpoint(&h, 0, nullptr), need);
  char small[5];
  memset(small, 'x', sizeof small);
  EXPECT_EQ(cr_log_checkpoint(&h, sizeof small, small), need);  // truncated, terminated
  EXPECT_EQ(strlen(small), sizeof small - 1);
  EXPECT_EQ(strncmp(small, buf.data(), sizeof small - 1), 0);

  errno = 0;
  EXPECT_GT(cr_reap_checkpoint(&h), 0) << cr_strerror(errno);
  EXPECT_LT(::fcntl(fd, F_GETFD), 0) << "reap closes the handle";
  errno = 0;
  EXPECT_EQ(cr_reap_checkpoint(&h), -1);  // reaped: no longer a handle
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(cr_wait_checkpoint(&h, &zero), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_GT(img.size(), 0);
}

TEST_F(Libcr, PollCheckpointMsgGivesTheMessage) {
  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  cr_checkpoint_handle_t h = 0;
  ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
  char* msg = nullptr;
  int r = cr_poll_checkpoint_msg(&h, nullptr, &msg);
  EXPECT_GT(r, 0) << cr_strerror(errno);
  ASSERT_NE(msg, nullptr);
  EXPECT_GT(strlen(msg), 0u);
  EXPECT_NE(strstr(msg, "checkpoint"), nullptr) << msg;
  free(msg);
}

TEST_F(Libcr, BadDescriptorIsEbadf) {
  Outcome o = checkpoint(12345);
  EXPECT_EQ(o.request, -1);
  EXPECT_EQ(o.request_errno, EBADF) << o;
}

TEST_F(Libcr, ProhibitSelfIsEdeadlk) {
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd(), 0, CR_CHKPT_PROHIBIT_SELF);
  EXPECT_EQ(o.request, -1);
  EXPECT_EQ(o.request_errno, EDEADLK) << o;
  EXPECT_EQ(img.size(), 0);
}

bool alive(pid_t p) {
  return kill(p, 0) == 0;
}

// A pid that is certainly not running: a reaped child's.
pid_t dead_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

TEST_F(Libcr, NonexistentPidIsEsrch) {
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd(), dead_pid());
  if (o.request == 0) {  // BLCR allows the error to come at reap
    EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
    EXPECT_EQ(o.poll_errno, ESRCH) << o;
  } else {
    EXPECT_EQ(o.request, -1);
    EXPECT_EQ(o.request_errno, ESRCH) << o;
  }
}

TEST_F(Libcr, AsyncErrDefersTheErrorToReap) {
  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd(), CR_CHKPT_ASYNC_ERR);
  a.cr_target = dead_pid();
  cr_checkpoint_handle_t h = 0;
  ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
  EXPECT_GT(cr_wait_checkpoint(&h, nullptr), 0);
  errno = 0;
  EXPECT_EQ(cr_reap_checkpoint(&h), -1);
  EXPECT_EQ(errno, ESRCH) << cr_strerror(errno);
}

// ---- callbacks: order, context, what they see ----

TEST_F(Libcr, SignalContextCallbacksRunLastRegisteredFirst) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg_record(2, CR_SIGNAL_CONTEXT);
  reg_record(3, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  auto ev = events();
  ASSERT_EQ(ev.size(), 6u) << describe_events();
  // 3 enters, calls cr_checkpoint, which runs 2, which runs 1; then back up.
  const int want_tag[] = {3, 2, 1, 1, 2, 3};
  const int want_what[] = {kBefore, kBefore, kBefore, kAfter, kAfter, kAfter};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(ev[i].tag, want_tag[i]) << i;
    EXPECT_EQ(ev[i].what, want_what[i]) << i;
    EXPECT_EQ(ev[i].tid, tid()) << "signal-context callbacks run in the registering thread";
    if (ev[i].what == kAfter) {
      EXPECT_EQ(ev[i].value, 0) << "cr_checkpoint() on continue";
    }
  }
}

TEST_F(Libcr, ThreadContextCallbacksRunFirstOnAnotherThread) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg_record(2, CR_SIGNAL_CONTEXT);
  reg_record(11, CR_THREAD_CONTEXT);
  reg_record(12, CR_THREAD_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  auto ev = events();
  ASSERT_EQ(ev.size(), 8u) << describe_events();

  int first_signal = find_event(kBefore, 2);
  ASSERT_GE(first_signal, 0);
  for (int t : {11, 12}) {
    int i = find_event(kBefore, t);
    ASSERT_GE(i, 0) << t;
    EXPECT_LT(i, first_signal) << "thread-context callback " << t
                               << " must reach cr_checkpoint() before signal-context ones run";
    EXPECT_NE(ev[i].tid, tid()) << "thread-context callbacks run in libcr's own thread";
    EXPECT_EQ(ev[i].tid, ev[find_event(kAfter, t)].tid);
  }
  // The thread-context list runs last registered first too.
  EXPECT_LT(find_event(kBefore, 12), find_event(kBefore, 11));
  EXPECT_LT(find_event(kAfter, 11), find_event(kAfter, 12));
  EXPECT_LT(find_event(kBefore, 2), find_event(kBefore, 1));
  EXPECT_LT(find_event(kAfter, 1), find_event(kAfter, 2));
  for (const Event& e : ev)
    if (e.what == kAfter) {
      EXPECT_EQ(e.value, 0) << "callback " << e.tag;
    }
  for (int t : {1, 2}) EXPECT_EQ(ev[find_event(kBefore, t)].tid, tid());
}

// What one callback observes; filled in the callback, checked afterwards.
struct Observed {
  std::atomic<int> runs{0};
  bool have_info = false;
  struct cr_checkpoint_info info;
  char dest[PATH_MAX];
  int status = -100;
  int enter = -100, tryenter = -100, leave = -100;
  int register_rc = -100, register_errno = 0;
  int replace_rc = -100, replace_errno = 0;
  int replace_self_bad = -100, replace_self_bad_errno = 0;
  const void* restart_info_before = reinterpret_cast<void*>(1);
  int checkpoint_rc = -100;
  const void* info_after = reinterpret_cast<void*>(1);
  int info_after_errno = 0;
  int again = -100;
  int forward_after = -100, forward_after_errno = 0;
  int status_after = -100;
};

Observed g_obs_signal, g_obs_thread;
cr_callback_id_t g_some_id = -1;

void observe(Observed& o, int own_ctx) {
  ++o.runs;
  const struct cr_checkpoint_info* ci = cr_get_checkpoint_info();
  if (ci) {
    o.have_info = true;
    o.info = *ci;
    snprintf(o.dest, sizeof o.dest, "%s", ci->dest ? ci->dest : "(null)");
  }
  o.status = cr_status();
  o.enter = cr_enter_cs(CR_ID_CALLBACK);
  o.tryenter = cr_tryenter_cs(CR_ID_CALLBACK);
  o.leave = cr_leave_cs(CR_ID_CALLBACK);
  if (own_ctx == CR_SIGNAL_CONTEXT) cr_leave_cs(CR_ID_CALLBACK);  // (balanced: enter+tryenter)
  errno = 0;
  o.register_rc = cr_register_callback(cb_record, nullptr, CR_SIGNAL_CONTEXT);
  o.register_errno = errno;
  errno = 0;
  o.replace_rc = cr_replace_callback(g_some_id, cb_record, nullptr, CR_SIGNAL_CONTEXT);
  o.replace_errno = errno;
  errno = 0;
  int other = own_ctx == CR_SIGNAL_CONTEXT ? CR_THREAD_CONTEXT : CR_SIGNAL_CONTEXT;
  o.replace_self_bad = cr_replace_self(cb_record, nullptr, other);
  o.replace_self_bad_errno = errno;
  o.restart_info_before = cr_get_restart_info();
  o.checkpoint_rc = cr_checkpoint(CR_CHECKPOINT_READY);
  errno = 0;
  o.info_after = cr_get_checkpoint_info();
  o.info_after_errno = errno;
  // (cr_get_restart_info() after a continue: BLCR leaves its contents undefined.)
  o.again = cr_checkpoint(CR_CHECKPOINT_READY);
  errno = 0;
  o.forward_after = cr_forward_checkpoint(CR_SCOPE_PROC, 0);
  o.forward_after_errno = errno;
  o.status_after = cr_status();
}

int cb_observe_signal(void*) {
  observe(g_obs_signal, CR_SIGNAL_CONTEXT);
  return 0;
}
int cb_observe_thread(void*) {
  observe(g_obs_thread, CR_THREAD_CONTEXT);
  return 0;
}

std::atomic<int> g_usr2{0};
void on_usr2(int) {
  ++g_usr2;
}

void check_observed(const Observed& o, const ImageFile& img, const char* which) {
  SCOPED_TRACE(which);
  EXPECT_EQ(o.runs.load(), 1);
  ASSERT_TRUE(o.have_info) << "cr_get_checkpoint_info() before cr_checkpoint()";
  EXPECT_STREQ(o.dest, img.canonical().c_str());
  EXPECT_EQ(o.info.requester, getpid()) << "libcr names itself as the requester";
  EXPECT_EQ(o.info.target, getpid());
  EXPECT_EQ(o.info.scope, CR_SCOPE_PROC);
  EXPECT_EQ(o.info.signal, SIGUSR2);
  EXPECT_EQ(o.status, CR_STATE_ACTIVE);
  EXPECT_EQ(o.enter, 0) << "cr_enter_cs(CR_ID_CALLBACK) in a callback";
  EXPECT_EQ(o.tryenter, 0);
  EXPECT_EQ(o.leave, 0);
  EXPECT_EQ(o.register_rc, -1);
  EXPECT_EQ(o.register_errno, EBUSY) << "cr_register_callback in a callback";
  EXPECT_EQ(o.replace_rc, -1);
  EXPECT_EQ(o.replace_errno, EBUSY) << "cr_replace_callback in a callback";
  EXPECT_EQ(o.replace_self_bad, -1);
  EXPECT_EQ(o.replace_self_bad_errno, EINVAL) << "cr_replace_self with the other context";
  EXPECT_EQ(o.restart_info_before, nullptr);
  EXPECT_EQ(o.checkpoint_rc, 0) << "cr_checkpoint() returns 0 on continue";
  EXPECT_EQ(o.info_after, nullptr) << "cr_get_checkpoint_info() after cr_checkpoint()";
  EXPECT_EQ(o.info_after_errno, CR_ENOTCB);
  EXPECT_EQ(o.again, -CR_ENOTCB) << "a second cr_checkpoint() in one callback";
  EXPECT_EQ(o.forward_after, -1);
  EXPECT_EQ(o.forward_after_errno, CR_ENOTCB) << "cr_forward_checkpoint after cr_checkpoint";
}

TEST_F(Libcr, CallbacksSeeTheRequestAndMayUseTheCallbackOnlyFunctions) {
  g_obs_signal.runs = 0;
  g_obs_thread.runs = 0;
  g_some_id = reg_record(5, CR_SIGNAL_CONTEXT);  // disabled below: only a target to replace
  ASSERT_EQ(cr_replace_callback(g_some_id, nullptr, nullptr, CR_SIGNAL_CONTEXT), 0);
  reg(cb_observe_signal, nullptr, CR_SIGNAL_CONTEXT);
  reg(cb_observe_thread, nullptr, CR_THREAD_CONTEXT);

  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr2;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  g_usr2 = 0;

  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd(), 0, 0, SIGUSR2);
  EXPECT_GT(o.poll, 0) << o;
  check_observed(g_obs_signal, img, "signal context");
  check_observed(g_obs_thread, img, "thread context");
  EXPECT_EQ(count_events(kBefore, 5), 0) << "a disabled callback ran";
  EXPECT_TRUE(eventually([] { return g_usr2 > 0; })) << "cr_signal was not sent";
  EXPECT_EQ(cr_status(), CR_STATE_IDLE);
  sigaction(SIGUSR2, &old, nullptr);
}

TEST_F(Libcr, CallbackThatReturnsWithoutCrCheckpointGetsItCalled) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg(
      [](void*) {
        record(kBefore, 2, 0);
        return 0;  // no cr_checkpoint(): libcr calls it
      },
      nullptr, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_LT(find_event(kBefore, 2), find_event(kBefore, 1));
  EXPECT_EQ(count_events(kAfter, 1), 1);
  EXPECT_GT(img.size(), 0);
}

// cr_replace_self: the callback is replaced for the next checkpoint.
int cb_second(void*) {
  record(kBefore, 22, 0);
  return cr_checkpoint(0) < 0 ? 0 : 0;
}
std::atomic<int> g_replace_self_rc{-100};
int cb_first(void*) {
  record(kBefore, 21, 0);
  g_replace_self_rc = cr_replace_self(cb_second, nullptr, CR_SIGNAL_CONTEXT);
  cr_checkpoint(0);
  return 0;
}

TEST_F(Libcr, ReplaceSelfTakesEffectForTheNextCheckpoint) {
  reg(cb_first, nullptr, CR_SIGNAL_CONTEXT);
  ImageFile a(dir_, "a"), b(dir_, "b");
  Outcome o1 = checkpoint(a.fd());
  EXPECT_GT(o1.poll, 0) << o1;
  EXPECT_EQ(g_replace_self_rc.load(), 0);
  EXPECT_EQ(count_events(kBefore, 21), 1);
  EXPECT_EQ(count_events(kBefore, 22), 0);
  Outcome o2 = checkpoint(b.fd());
  EXPECT_GT(o2.poll, 0) << o2;
  EXPECT_EQ(count_events(kBefore, 21), 1);
  EXPECT_EQ(count_events(kBefore, 22), 1);
}

TEST_F(Libcr, ReplaceCallbackChangesOrDisablesIt) {
  cr_callback_id_t s = reg_record(1, CR_SIGNAL_CONTEXT);
  cr_callback_id_t t = reg_record(11, CR_THREAD_CONTEXT);
  ASSERT_EQ(cr_replace_callback(s, cb_record, tag_arg(2), CR_SIGNAL_CONTEXT), 0);
  ASSERT_EQ(cr_replace_callback(t, nullptr, nullptr, CR_THREAD_CONTEXT), 0);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_EQ(count_events(kBefore, 1), 0);
  EXPECT_EQ(count_events(kBefore, 2), 1) << "the replacement (new arg) runs";
  EXPECT_EQ(count_events(kBefore, 11), 0) << "a NULL replacement disables";
}

// BLCR: inside a callback the critical-section calls return at once, whatever the id (its
// cr_enter_cs ignores the id while the thread's checkpoint is ACTIVE): code that guards itself
// with its own client id works when a callback calls it.
std::atomic<int> g_own_tryenter{-100}, g_own_leave{-100};
cr_client_id_t g_own_id = -1;
int cb_tryenter_own_id(void*) {
  g_own_tryenter = cr_tryenter_cs(g_own_id);
  g_own_leave = g_own_tryenter == 0 ? cr_leave_cs(g_own_id) : -100;
  cr_checkpoint(0);
  return 0;
}

TEST_F(Libcr, TryenterWithOwnClientIdInsideACallbackReturnsAtOnce) {
  g_own_id = id_;
  g_own_tryenter = -100;
  reg(cb_tryenter_own_id, nullptr, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_EQ(g_own_tryenter.load(), 0) << "cr_tryenter_cs(own id) in a callback: 0 (in callback)";
  EXPECT_EQ(g_own_leave.load(), 0);
}

// A forked child runs body with a time limit; -2 if it had to be killed.
int in_child_timeout(const std::function<int()>& body, int ms) {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) _exit(body());
  if (p < 0) return -1;
  int st = 0;
  if (eventually([&] { return waitpid(p, &st, WNOHANG) == p; }, ms)) return st;
  kill(p, SIGKILL);
  waitpid(p, &st, 0);
  return -2;
}

int cb_enter_own_id(void*) {
  if (cr_enter_cs(g_own_id) != 0) _exit(20);
  if (cr_leave_cs(g_own_id) != 0) _exit(21);
  return 0;
}

TEST_F(Libcr, EnterWithOwnClientIdInsideACallbackReturnsAtOnce) {
  g_own_id = id_;
  std::string path = dir_.path() + "/enter-own";
  int st = in_child_timeout(
      [&] {
        if (cr_register_callback(cb_enter_own_id, nullptr, CR_SIGNAL_CONTEXT) < 0) return 10;
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        cr_checkpoint_args_t a = self_args(fd);
        cr_checkpoint_handle_t h;
        if (cr_request_checkpoint(&a, &h) != 0) return 11;
        return cr_poll_checkpoint(&h, nullptr) > 0 ? 0 : 12;
      },
      3000);  // (a checkpoint of the child takes some 20 ms)
  ASSERT_NE(st, -2) << "cr_enter_cs(own client id) in a callback never returned (deadlock)";
  ASSERT_TRUE(WIFEXITED(st)) << std::hex << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

// Each thread's signal-context callbacks run in that thread.
TEST_F(Libcr, SignalContextCallbacksOfAnotherThreadRunInThatThread) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  std::atomic<bool> stop{false}, ready{false};
  std::atomic<pid_t> worker_tid{0};
  std::thread worker([&] {
    cr_init();
    cr_callback_id_t id = cr_register_callback(cb_record, tag_arg(2), CR_SIGNAL_CONTEXT);
    worker_tid = tid();
    ready = id >= 0;
    while (!stop) sleep_ms(1);
  });
  EXPECT_TRUE(eventually([&] { return worker_tid != 0; }));
  EXPECT_TRUE(ready);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  stop = true;
  worker.join();
  EXPECT_GT(o.poll, 0) << o;
  int m = find_event(kBefore, 1), w = find_event(kBefore, 2);
  ASSERT_GE(m, 0);
  ASSERT_GE(w, 0) << "the other thread's callback did not run";
  auto ev = events();
  EXPECT_EQ(ev[m].tid, tid());
  EXPECT_EQ(ev[w].tid, worker_tid.load());
  EXPECT_EQ(ev[find_event(kAfter, 2)].value, 0);
}

// A fork child is a libcr process of its own: its checkpoint runs its (inherited) callbacks,
// not the parent's.
TEST_F(Libcr, ForkChildIsALibcrProcessOfItsOwn) {
  SharedPage shared;
  ASSERT_NE(shared.get(), nullptr);
  g_child_shared = shared.get();
  shared->delay_ms = 0;
  reg(cb_child, nullptr, CR_SIGNAL_CONTEXT);  // inherited by the child's (forking) thread
  std::string path = dir_.path() + "/child-image";
  int st = in_child_timeout(
      [&] {
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        cr_checkpoint_args_t a = self_args(fd);
        cr_checkpoint_handle_t h;
        if (cr_request_checkpoint(&a, &h) != 0) return 11;
        return cr_poll_checkpoint(&h, nullptr) > 0 ? 0 : 12;
      },
      10000);
  g_child_shared = nullptr;
  ASSERT_TRUE(WIFEXITED(st)) << std::hex << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_EQ(shared->runs.load(), 1) << "the child's callback";
  EXPECT_EQ(shared->checkpoint_rc.load(), 0);
  EXPECT_NE(shared->requester.load(), getpid()) << "the child requested it, not we";
  struct stat sb;
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_GT(sb.st_size, 0);
}

// ---- callbacks asking for failure or omission ----

std::atomic<int> g_fail_flags{0};
std::atomic<int> g_fail_rc{-100};
int cb_fail(void*) {
  record(kBefore, 31, 0);
  g_fail_rc = cr_checkpoint(g_fail_flags);
  record(kAfter, 31, g_fail_rc);
  return 0;
}

TEST_F(Libcr, TempFailureCodeCancelsWithTheCode) {
  reg_record(1, CR_SIGNAL_CONTEXT);  // runs after (below) the failing one: must not run
  reg(cb_fail, nullptr, CR_SIGNAL_CONTEXT);
  g_fail_flags = CR_CHECKPOINT_TEMP_FAILURE_CODE(7);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_EQ(o.request, 0) << o;
  EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
  EXPECT_EQ(o.poll_errno, 7) << o;
  EXPECT_LT(g_fail_rc.load(), 0);
  EXPECT_EQ(g_fail_rc.load(), -7) << "cr_checkpoint() returns -(user code)";
  EXPECT_EQ(count_events(kBefore, 1), 0) << "callbacks below an aborting one do not run";
  EXPECT_EQ(img.size(), 0) << "no image after a cancelled checkpoint";
  EXPECT_EQ(cr_status(), CR_STATE_IDLE);
  // The process is fine for the next one.
  g_fail_flags = 0;
  ImageFile img2(dir_, "again");
  Outcome o2 = checkpoint(img2.fd());
  EXPECT_GT(o2.poll, 0) << o2;
}

TEST_F(Libcr, TempFailureWithoutCodeIsEtempfail) {
  reg(cb_fail, nullptr, CR_SIGNAL_CONTEXT);
  g_fail_flags = CR_CHECKPOINT_TEMP_FAILURE;
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
  EXPECT_EQ(o.poll_errno, CR_ETEMPFAIL) << o;
  EXPECT_EQ(g_fail_rc.load(), -CR_ETEMPFAIL);
  g_fail_flags = 0;
}

TEST_F(Libcr, TempFailureFromAThreadContextCallback) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg(cb_fail, nullptr, CR_THREAD_CONTEXT);
  g_fail_flags = CR_CHECKPOINT_TEMP_FAILURE_CODE(9);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
  EXPECT_EQ(o.poll_errno, 9) << o;
  EXPECT_EQ(g_fail_rc.load(), -9);
  EXPECT_EQ(count_events(kBefore, 1), 0) << "signal-context callbacks after an abort";
  g_fail_flags = 0;
}

TEST_F(Libcr, OmitLeavesNothingToCheckpoint) {
  reg(cb_fail, nullptr, CR_SIGNAL_CONTEXT);
  g_fail_flags = CR_CHECKPOINT_OMIT;
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  if (o.request == 0) {
    EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
    EXPECT_EQ(o.poll_errno, ESRCH) << o;
  } else {
    EXPECT_EQ(o.request_errno, ESRCH) << o;
  }
  EXPECT_EQ(g_fail_rc.load(), -CR_EOMITTED);
  g_fail_flags = 0;
}

// A forked child of the test process runs body (with libcr, the forking thread only) and
// exits with its return value; the parent gets the wait status.
int in_child(const std::function<int()>& body) {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) _exit(body());
  int st = 0;
  if (p < 0 || waitpid(p, &st, 0) != p) return -1;
  return st;
}

int cb_perm(void*) {
  cr_checkpoint(CR_CHECKPOINT_PERM_FAILURE_CODE(9));
  return 0;
}
int cb_returns_nonzero(void*) {
  return 3;
}

// Both kill the job: run in a forked child.
TEST_F(Libcr, PermFailureKillsTheJob) {
  for (cr_callback_t fn : {cb_perm, cb_returns_nonzero}) {
    std::string path = dir_.path() + "/perm";
    int st = in_child([&] {
      if (cr_register_callback(fn, nullptr, CR_SIGNAL_CONTEXT) < 0) return 10;
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
      cr_checkpoint_args_t a = self_args(fd);
      cr_checkpoint_handle_t h;
      if (cr_request_checkpoint(&a, &h) != 0) return 11;
      cr_poll_checkpoint(&h, nullptr);
      return 12;  // still alive
    });
    ASSERT_TRUE(WIFSIGNALED(st)) << "status " << std::hex << st;
    EXPECT_EQ(WTERMSIG(st), SIGKILL);
  }
}

// ---- critical sections against checkpoints ----

TEST_F(Libcr, RequestWhileInCriticalSectionWaitsForLeave) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg_record(11, CR_THREAD_CONTEXT);
  ImageFile img(dir_);
  ASSERT_EQ(cr_enter_cs(id_), 0);
  std::atomic<bool> requested{false};
  Outcome o;
  std::thread requester([&] {
    requested = true;
    o = checkpoint(img.fd());
  });
  bool pending = eventually([] { return cr_status() == CR_STATE_PENDING; });
  EXPECT_TRUE(pending) << "cr_status() while a request waits for our critical section: "
                       << cr_status();
  sleep_ms(pending ? 300 : 0);
  EXPECT_EQ(g_n_events.load(), 0) << "callbacks started inside the critical section";
  EXPECT_EQ(cr_status(), pending ? CR_STATE_PENDING : cr_status());
  int64_t left = now_ns();
  EXPECT_EQ(cr_leave_cs(id_), 0);
  // BLCR: leaving the last critical section runs the pending checkpoint before returning.
  EXPECT_EQ(count_events(kAfter, 1), 1) << "cr_leave_cs returned before the checkpoint ran";
  requester.join();
  EXPECT_GT(o.poll, 0) << o;
  for (int t : {1, 11}) {
    int i = find_event(kBefore, t);
    ASSERT_GE(i, 0) << t;
    EXPECT_GE(events()[i].ns, left) << "callback " << t << " ran before cr_leave_cs";
  }
}

TEST_F(Libcr, NestedCriticalSectionsHoldUntilTheOutermostLeave) {
  reg_record(1, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  ASSERT_EQ(cr_enter_cs(id_), 0);
  ASSERT_EQ(cr_enter_cs(id_), 0);
  Outcome o;
  std::thread requester([&] { o = checkpoint(img.fd()); });
  EXPECT_TRUE(eventually([] { return cr_status() == CR_STATE_PENDING; }));
  EXPECT_EQ(cr_leave_cs(id_), 0);  // still inside the outer one
  sleep_ms(200);
  EXPECT_EQ(g_n_events.load(), 0);
  int64_t left = now_ns();
  EXPECT_EQ(cr_leave_cs(id_), 0);
  requester.join();
  EXPECT_GT(o.poll, 0) << o;
  int i = find_event(kBefore, 1);
  ASSERT_GE(i, 0);
  EXPECT_GE(events()[i].ns, left);
}

// While a checkpoint runs (a thread-context callback holds it before the signal phase),
// another cr_init thread cannot enter a critical section: cr_tryenter_cs says > 0 and
// cr_enter_cs waits until the checkpoint is over.
std::atomic<int> g_go{0};
std::atomic<int> g_try_rc{-100};
std::atomic<int> g_worker_status{-100};
std::atomic<int64_t> g_tc_done_ns{0};
int cb_let_worker_try(void*) {
  g_go = 1;
  for (int i = 0; i < 5000 && g_try_rc == -100; ++i) sleep_ms(1);
  sleep_ms(100);  // the worker is now blocked in cr_enter_cs
  int r = cr_checkpoint(0);
  g_tc_done_ns = now_ns();
  record(kAfter, 41, r);
  return 0;
}

TEST_F(Libcr, OtherThreadsCannotEnterCriticalSectionsDuringACheckpoint) {
  g_go = 0;
  g_try_rc = -100;
  g_tc_done_ns = 0;
  reg(cb_let_worker_try, nullptr, CR_THREAD_CONTEXT);
  std::atomic<int64_t> entered_ns{0};
  std::atomic<int> enter_rc{-100};
  std::thread worker([&] {
    cr_client_id_t id = cr_init();
    while (!g_go) sleep_ms(1);
    g_worker_status = cr_status();
    g_try_rc = cr_tryenter_cs(id);
    enter_rc = cr_enter_cs(id);
    entered_ns = now_ns();
    if (enter_rc == 0) cr_leave_cs(id);
  });
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  worker.join();
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_GT(g_try_rc.load(), 0) << "cr_tryenter_cs during a checkpoint";
  EXPECT_NE(g_worker_status.load(), CR_STATE_IDLE);
  EXPECT_EQ(enter_rc.load(), 0);
  EXPECT_GT(g_tc_done_ns.load(), 0);
  EXPECT_GE(entered_ns.load(), g_tc_done_ns.load()) << "cr_enter_cs returned mid-checkpoint";
}

// ---- hooks ----

TEST_F(Libcr, ContinueHooksRunAfterTheCallbacks) {
  hook(CR_HOOK_CONT_SIGNAL_CONTEXT, hook_record);
  hook(CR_HOOK_CONT_THREAD_CONTEXT, hook_record);
  hook(CR_HOOK_RSTRT_SIGNAL_CONTEXT, hook_record);
  hook(CR_HOOK_RSTRT_THREAD_CONTEXT, hook_record);
  reg_record(1, CR_SIGNAL_CONTEXT);
  reg_record(11, CR_THREAD_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  int hs = find_event(kHook, CR_HOOK_CONT_SIGNAL_CONTEXT);
  int ht = find_event(kHook, CR_HOOK_CONT_THREAD_CONTEXT);
  ASSERT_GE(hs, 0) << "CR_HOOK_CONT_SIGNAL_CONTEXT did not run";
  ASSERT_GE(ht, 0) << "CR_HOOK_CONT_THREAD_CONTEXT did not run";
  auto ev = events();
  EXPECT_EQ(ev[hs].tid, tid());
  EXPECT_EQ(ev[ht].tid, ev[find_event(kBefore, 11)].tid);
  EXPECT_GT(hs, find_event(kAfter, 1)) << "the hook runs after the callbacks' cr_checkpoint";
  EXPECT_GT(ht, find_event(kAfter, 11));
  EXPECT_EQ(count_events(kHook, CR_HOOK_CONT_SIGNAL_CONTEXT), 1);
  EXPECT_EQ(count_events(kHook, CR_HOOK_RSTRT_SIGNAL_CONTEXT), 0);
  EXPECT_EQ(count_events(kHook, CR_HOOK_RSTRT_THREAD_CONTEXT), 0);
}

TEST_F(Libcr, NoHookAfterAFailedCheckpoint) {
  hook(CR_HOOK_CONT_SIGNAL_CONTEXT, hook_record);
  reg(cb_fail, nullptr, CR_SIGNAL_CONTEXT);
  g_fail_flags = CR_CHECKPOINT_TEMP_FAILURE;
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  g_fail_flags = 0;
  EXPECT_EQ(o.poll, CR_POLL_CHKPT_ERR_POST) << o;
  EXPECT_EQ(count_events(kHook, CR_HOOK_CONT_SIGNAL_CONTEXT), 0);
}

// A thread with no callbacks runs CR_HOOK_CONT_NO_CALLBACKS (Libcr::no_callbacks_hook).
TEST_F(Libcr, NoCallbacksHookRunsInACrInitThreadWithoutCallbacks) {
  no_callbacks_hook(true);
}

// BLCR: threads that never called cr_init are checkpointed the easy way, and run the
// CR_HOOK_*_NO_CALLBACKS hook too.
TEST_F(Libcr, NoCallbacksHookRunsInAThreadThatNeverCalledCrInit) {
  no_callbacks_hook(false);
}

// ---- scopes ----

std::atomic<int> g_seen_scope{-100};
std::atomic<int> g_seen_target{-100};
int cb_scope(void*) {
  if (const struct cr_checkpoint_info* ci = cr_get_checkpoint_info()) {
    g_seen_scope = ci->scope;
    g_seen_target = ci->target;
  }
  return 0;
}

TEST_F(Libcr, TreeScopeOfSelf) {
  g_seen_scope = -100;
  reg(cb_scope, nullptr, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  a.cr_scope = CR_SCOPE_TREE;
  cr_checkpoint_handle_t h = 0;
  ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
  EXPECT_GT(cr_poll_checkpoint(&h, nullptr), 0) << cr_strerror(errno);
  EXPECT_EQ(g_seen_scope.load(), CR_SCOPE_TREE);
  EXPECT_EQ(g_seen_target.load(), getpid());
  EXPECT_GT(img.size(), 0);
}

// ---- CR_SIGNUM belongs to libcr, whatever the application installs ----

std::atomic<int> g_app_hits{0};
void app_action(int sig, siginfo_t*, void*) {
  if (sig == CR_SIGNUM) ++g_app_hits;
}

TEST_F(Libcr, ApplicationDispositionOfCrSignumIsKeptAndCheckpointsStillWork) {
  struct sigaction saved;
  ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &saved), 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = app_action;
  sa.sa_flags = SA_SIGINFO | SA_RESTORER;
  sa.sa_restorer = reinterpret_cast<void (*)()>(0x1234);
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(CR_SIGNUM, &sa, nullptr), 0);
  struct sigaction back;
  ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &back), 0);
  EXPECT_EQ(back.sa_sigaction, app_action);
  EXPECT_EQ(back.sa_flags, SA_SIGINFO | SA_RESTORER);
  EXPECT_EQ(reinterpret_cast<void*>(back.sa_restorer), reinterpret_cast<void*>(0x1234));

  // Blocking it is ignored too.
  sigset_t block, oldmask;
  sigemptyset(&block);
  sigaddset(&block, CR_SIGNUM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &oldmask), 0);

  reg_record(1, CR_SIGNAL_CONTEXT);
  g_app_hits = 0;
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_EQ(count_events(kAfter, 1), 1) << "the callback did not run";
  EXPECT_EQ(g_app_hits.load(), 0) << "the application's handler got libcr's request";

  ASSERT_EQ(kill(getpid(), CR_SIGNUM), 0);  // not a request: the application's
  EXPECT_TRUE(eventually([] { return g_app_hits > 0; }, 2000));
  EXPECT_EQ(g_app_hits.load(), 1);

  pthread_sigmask(SIG_SETMASK, &oldmask, nullptr);
  sigaction(CR_SIGNUM, &saved, nullptr);
}

// libcr hands the application every CR_SIGNUM that is not a checkpoint request. A queued
// CR_SIGNUM whose value happens to be the sequence number of a past request is not one.
std::atomic<int> g_app_queued{0};
void app_count(int sig, siginfo_t*, void*) {
  if (sig == CR_SIGNUM) ++g_app_queued;
}

TEST_F(Libcr, QueuedCrSignumWithTheValueOfAPastRequestIsTheApplications) {
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());  // a past request
  ASSERT_GT(o.poll, 0) << o;
  reg_record(1, CR_SIGNAL_CONTEXT);
  g_n_events = 0;
  struct sigaction saved, sa;
  ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &saved), 0);
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = app_count;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(CR_SIGNUM, &sa, nullptr), 0);
  g_app_queued = 0;
  // Request numbers count from 1 per process; this process has made fewer than 1000 (even
  // with --gtest_repeat=10).
  constexpr int kValues = 1000;
  for (int v = 1; v <= kValues; ++v) {
    union sigval val;
    val.sival_int = v;
    ASSERT_EQ(sigqueue(getpid(), CR_SIGNUM, val), 0);
    eventually([&] { return g_app_queued >= v || g_n_events > 0; }, 200);
  }
  eventually([] { return g_app_queued >= kValues; }, 200);
  sigaction(CR_SIGNUM, &saved, nullptr);
  EXPECT_EQ(g_app_queued.load(), kValues) << "queued CR_SIGNUMs the application did not get";
  EXPECT_EQ(count_events(kBefore, 1), 0) << "a stale request number ran the callbacks";
  EXPECT_EQ(cr_status(), CR_STATE_IDLE);
}

TEST_F(Libcr, QueuedCrSignumWithANegativeValueFromSelfIsTheApplications) {
  struct sigaction saved, sa;
  ASSERT_EQ(sigaction(CR_SIGNUM, nullptr, &saved), 0);
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = app_count;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(CR_SIGNUM, &sa, nullptr), 0);
  g_app_queued = 0;
  union sigval val;
  val.sival_int = -5;
  ASSERT_EQ(sigqueue(getpid(), CR_SIGNUM, val), 0);
  eventually([] { return g_app_queued > 0; }, 300);
  sigaction(CR_SIGNUM, &saved, nullptr);
  EXPECT_EQ(g_app_queued.load(), 1) << "sigqueue(getpid(), CR_SIGNUM, -5) was swallowed";
}

// ---- deprecated requests ----

TEST_F(Libcr, DeprecatedRequestFileMakesACheckpointFile) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  reg_record(1, CR_SIGNAL_CONTEXT);
  std::string path = dir_.path() + "/context.file";
  cr_request_file(path.c_str());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
  EXPECT_GT(st.st_size, 0);
  EXPECT_EQ(count_events(kAfter, 1), 1);

  ImageFile img(dir_, "context.fd");
  cr_request_fd(img.fd());
  EXPECT_GT(img.size(), 0);
  EXPECT_EQ(count_events(kAfter, 1), 2);

  // cr_request(): to context.<pid> in the current directory.
  char cwd[PATH_MAX];
  ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(chdir(dir_.path().c_str()), 0);
  cr_request();
  ASSERT_EQ(chdir(cwd), 0);
  std::string ctx = dir_.path() + "/context." + std::to_string(getpid());
  EXPECT_EQ(::stat(ctx.c_str(), &st), 0) << ctx;
  EXPECT_GT(st.st_size, 0);
  EXPECT_EQ(count_events(kAfter, 1), 3);
#pragma GCC diagnostic pop
}

// ---- other processes: forked children with libcr ----

// BLCR: a request for other processes returns once they have it; the checkpoint goes on
// asynchronously (reap says EAGAIN until it is done, wait and poll time out).
TEST_F(Libcr, RequestForAnotherProcessReturnsBeforeItIsCheckpointed) {
  SharedPage shared;
  ASSERT_NE(shared.get(), nullptr);
  shared->delay_ms = 1000;  // the child's callback takes its time
  LibcrChild child(shared.get());
  ASSERT_TRUE(child.ready());

  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  a.cr_target = child.pid();
  cr_checkpoint_handle_t h = 0;
  int64_t t0 = now_ns();
  ASSERT_EQ(cr_request_checkpoint(&a, &h), 0) << cr_strerror(errno);
  int64_t request_ms = (now_ns() - t0) / 1000000;
  EXPECT_LT(request_ms, 500) << "cr_request_checkpoint waited for the checkpoint to finish";

  errno = 0;
  int reaped = cr_reap_checkpoint(&h);
  EXPECT_EQ(reaped, -1) << "reap before the checkpoint is done";
  EXPECT_EQ(errno, EAGAIN);
  if (reaped == -1) {  // (otherwise the handle is gone)
    struct timeval tv = {0, 20000};
    EXPECT_EQ(cr_wait_checkpoint(&h, &tv), 0) << "wait with a time limit";
    tv = {0, 0};
    EXPECT_EQ(cr_poll_checkpoint(&h, &tv), 0) << "poll with a zero time limit";
    errno = 0;
    EXPECT_GT(cr_poll_checkpoint(&h, nullptr), 0) << cr_strerror(errno);
  }
  EXPECT_EQ(shared->runs.load(), 1);
  EXPECT_EQ(shared->checkpoint_rc.load(), 0);
  EXPECT_EQ(shared->requester.load(), getpid()) << "the child sees us as the requester";
  EXPECT_EQ(shared->target.load(), child.pid());
  EXPECT_GT(img.size(), 0);
}

// Two requests for one process at once: the second is EBUSY (at request or at reap).
TEST_F(Libcr, OverlappingRequestsForOneProcessAreEbusy) {
  SharedPage shared;
  ASSERT_NE(shared.get(), nullptr);
  shared->delay_ms = 800;
  LibcrChild child(shared.get());
  ASSERT_TRUE(child.ready());

  ImageFile img(dir_), img2(dir_, "second");
  Outcome first;
  std::thread t([&] { first = checkpoint(img.fd(), child.pid()); });
  // The first request holds the child once its callback runs (it reports the requester).
  EXPECT_TRUE(eventually([&] { return shared->requester != 0; }));
  Outcome second = checkpoint(img2.fd(), child.pid());
  t.join();
  EXPECT_GT(first.poll, 0) << first;
  if (second.request == 0) {
    EXPECT_EQ(second.poll, CR_POLL_CHKPT_ERR_POST) << second;
    EXPECT_EQ(second.poll_errno, EBUSY) << second;
  } else {
    EXPECT_EQ(second.request_errno, EBUSY) << second;
  }
  EXPECT_EQ(shared->runs.load(), 1);
}

// cr_forward_checkpoint: from a callback, before cr_checkpoint.
struct ForwardSeen {
  int bad_scope = -100, bad_scope_errno = 0;
  int bad_target = -100, bad_target_errno = 0;
  int dead = -100, dead_errno = 0;
  int self = -100;
  int child = -100, child_errno = 0;
};
ForwardSeen g_fwd;
pid_t g_fwd_child = 0;
pid_t g_fwd_dead = 0;
int cb_forward(void*) {
  errno = 0;
  g_fwd.bad_scope = cr_forward_checkpoint(static_cast<cr_scope_t>(9), 0);
  g_fwd.bad_scope_errno = errno;
  errno = 0;
  g_fwd.bad_target = cr_forward_checkpoint(CR_SCOPE_PROC, -3);
  g_fwd.bad_target_errno = errno;
  errno = 0;
  g_fwd.dead = cr_forward_checkpoint(CR_SCOPE_PROC, g_fwd_dead);
  g_fwd.dead_errno = errno;
  g_fwd.self = cr_forward_checkpoint(CR_SCOPE_PROC, 0);
  errno = 0;
  g_fwd.child = g_fwd_child ? cr_forward_checkpoint(CR_SCOPE_PROC, g_fwd_child) : -100;
  g_fwd.child_errno = errno;
  record(kBefore, 51, 0);
  record(kAfter, 51, cr_checkpoint(0));
  return 0;
}

TEST_F(Libcr, ForwardCheckpointAddsProcessesToTheRequest) {
  SharedPage shared;
  ASSERT_NE(shared.get(), nullptr);
  shared->delay_ms = 0;
  LibcrChild child(shared.get());
  ASSERT_TRUE(child.ready());
  g_fwd = ForwardSeen();
  g_fwd_child = child.pid();
  g_fwd_dead = dead_pid();
  reg(cb_forward, nullptr, CR_SIGNAL_CONTEXT);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd());
  g_fwd_child = 0;
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_EQ(g_fwd.bad_scope, -1);
  EXPECT_EQ(g_fwd.bad_scope_errno, EINVAL);
  EXPECT_EQ(g_fwd.bad_target, -1);
  EXPECT_EQ(g_fwd.bad_target_errno, EINVAL);
  EXPECT_EQ(g_fwd.dead, -1);
  EXPECT_EQ(g_fwd.dead_errno, ESRCH);
  EXPECT_EQ(g_fwd.self, 0) << "forwarding to a process already in the request";
  EXPECT_EQ(g_fwd.child, 0) << cr_strerror(g_fwd.child_errno);
  EXPECT_EQ(shared->runs.load(), 1) << "the forwarded process's callback did not run";
  EXPECT_EQ(shared->checkpoint_rc.load(), 0);
  EXPECT_EQ(count_events(kAfter, 51), 1);
}

// A self-request while this process's own checkpoint runs (here: from another thread while
// a thread-context callback holds it) is EBUSY.
std::atomic<int> g_overlap_rc{-100};
std::atomic<int> g_overlap_errno{0};
int g_overlap_fd = -1;
int cb_overlap(void*) {
  std::thread t([] {
    cr_checkpoint_args_t a = self_args(g_overlap_fd);
    cr_checkpoint_handle_t h = 0;
    errno = 0;
    g_overlap_rc = cr_request_checkpoint(&a, &h);
    g_overlap_errno = errno;
    if (g_overlap_rc == 0) cr_poll_checkpoint(&h, nullptr);
  });
  t.detach();
  for (int i = 0; i < 5000 && g_overlap_rc == -100; ++i) sleep_ms(1);
  return 0;
}

TEST_F(Libcr, SelfRequestDuringOwnCheckpointIsEbusy) {
  g_overlap_rc = -100;
  ImageFile img(dir_), img2(dir_, "overlap");
  g_overlap_fd = img2.fd();
  reg(cb_overlap, nullptr, CR_THREAD_CONTEXT);
  Outcome o = checkpoint(img.fd());
  EXPECT_GT(o.poll, 0) << o;
  EXPECT_EQ(g_overlap_rc.load(), -1);
  EXPECT_EQ(g_overlap_errno.load(), EBUSY) << cr_strerror(g_overlap_errno);
}

// cr_timeout: callbacks that take longer cancel the checkpoint; the process goes on.
TEST_F(Libcr, TimeoutCancelsACheckpointWhoseCallbacksTakeTooLong) {
  SharedPage shared;
  ASSERT_NE(shared.get(), nullptr);
  shared->delay_ms = 1800;
  LibcrChild child(shared.get());
  ASSERT_TRUE(child.ready());
  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  a.cr_target = child.pid();
  a.cr_timeout = 1;
  cr_checkpoint_handle_t h = 0;
  int rc = cr_request_checkpoint(&a, &h);
  if (rc == 0) {
    errno = 0;
    EXPECT_EQ(cr_poll_checkpoint(&h, nullptr), CR_POLL_CHKPT_ERR_POST);
    EXPECT_NE(errno, 0);
  } else {
    EXPECT_NE(errno, 0);
  }
  EXPECT_TRUE(eventually([&] { return shared->runs > 0; }, 5000));
  EXPECT_LT(shared->checkpoint_rc.load(), 0) << "the child's cr_checkpoint() after the time limit";
  EXPECT_TRUE(alive(child.pid()));
}

// ---- restarts ----

// An exec'ed program (no libcr) as a child, to checkpoint and restart.
pid_t spawn_sleeper() {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) {
    execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until it is sleep (not a copy of us between fork and exec).
  std::string exe = "/proc/" + std::to_string(p) + "/exe";
  eventually([&] {
    char buf[PATH_MAX];
    ssize_t n = readlink(exe.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return false;
    buf[n] = 0;
    return strstr(buf, "sleep") != nullptr;
  });
  return p;
}

TEST_F(Libcr, RestartOfACheckpointedProgram) {
  pid_t p = spawn_sleeper();
  ASSERT_GT(p, 0);
  ImageFile img(dir_);
  Outcome o = checkpoint(img.fd(), p);
  ASSERT_GT(o.poll, 0) << o;
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);

  int fd = ::open(img.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  cr_restart_args_t a;
  ASSERT_EQ(cr_initialize_restart_args_t(&a), 0);
  a.cr_fd = fd;
  cr_restart_handle_t h = 0;
  ASSERT_EQ(cr_request_restart(&a, &h), 0) << cr_strerror(errno);
  errno = 0;
  EXPECT_EQ(cr_reap_checkpoint(&h), -1) << "a restart handle is not a checkpoint handle";
  EXPECT_EQ(errno, EINVAL);
  EXPECT_GT(cr_wait_restart(&h, nullptr), 0);
  int need = cr_log_restart(&h, 0, nullptr);
  EXPECT_GE(need, 0);
  errno = 0;
  int pid = cr_reap_restart(&h);
  ASSERT_GT(pid, 0) << cr_strerror(errno);
  EXPECT_EQ(pid, p) << "CR_RSTRT_RESTORE_PID (the default) keeps the pid";
  EXPECT_TRUE(alive(pid));

  // The restored process is our child.
  int st = 0;
  EXPECT_EQ(waitpid(pid, &st, WNOHANG), 0);

  // The same image again while its pid is in use: EBUSY.
  ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
  cr_restart_handle_t h2 = 0;
  errno = 0;
  int r2 = cr_request_restart(&a, &h2);
  if (r2 == 0) {
    char* msg = nullptr;
    errno = 0;
    EXPECT_EQ(cr_poll_restart_msg(&h2, nullptr, &msg), CR_POLL_RSTRT_ERR_POST);
    EXPECT_EQ(errno, EBUSY) << cr_strerror(errno);
    free(msg);
  } else {
    EXPECT_EQ(errno, EBUSY) << cr_strerror(errno);
  }

  kill(pid, SIGKILL);
  EXPECT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(st));

  // And now that the pid is free again, through cr_poll_restart.
  ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
  cr_restart_handle_t h3 = 0;
  ASSERT_EQ(cr_request_restart(&a, &h3), 0) << cr_strerror(errno);
  errno = 0;
  int pid3 = cr_poll_restart(&h3, nullptr);
  EXPECT_EQ(pid3, p) << cr_strerror(errno);
  if (pid3 > 0) {
    kill(pid3, SIGKILL);
    EXPECT_EQ(waitpid(pid3, &st, 0), pid3);
  }
  ::close(fd);
}

TEST_F(Libcr, RestartOfSomethingThatIsNotAnImageFails) {
  std::string path = dir_.path() + "/not-an-image";
  int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(w, 0);
  ASSERT_EQ(::write(w, "hello, world\n", 13), 13);
  ::close(w);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  cr_restart_args_t a;
  cr_initialize_restart_args_t(&a);
  a.cr_fd = fd;
  cr_restart_handle_t h = 0;
  errno = 0;
  int r = cr_request_restart(&a, &h);
  if (r == 0) {
    char* msg = nullptr;
    EXPECT_EQ(cr_poll_restart_msg(&h, nullptr, &msg), CR_POLL_RSTRT_ERR_POST);
    EXPECT_NE(errno, 0);
    free(msg);
  } else {
    EXPECT_EQ(r, -1);
    EXPECT_NE(errno, 0);
  }
  ::close(fd);
}

// The test process checkpoints itself, then restarts a copy of itself from the image (in a
// new PID namespace: its own pid is in use). In the copy, cr_checkpoint() returns > 0 (the
// restart's requester), cr_get_restart_info() describes the restart, the CR_HOOK_RSTRT_*
// hooks run and the request's handle reaps as CR_ERESTARTED; the copy writes what it saw to a
// file and exits.
struct RestartSeen {
  std::atomic<int> sig_rc{-100}, tc_rc{-100};
  std::atomic<bool> sig_ri{false}, tc_ri{false};
  std::atomic<int> sig_ri_requester{-100}, tc_ri_requester{-100};
  char sig_ri_src[PATH_MAX];
  std::atomic<bool> ci_after{true};
  std::atomic<int> hooks[CR_NUM_HOOKS];
};
RestartSeen g_rs;

int cb_restart_sig(void*) {
  int r = cr_checkpoint(0);
  g_rs.sig_rc = r;
  if (const struct cr_restart_info* ri = cr_get_restart_info()) {
    g_rs.sig_ri_requester = ri->requester;
    snprintf(g_rs.sig_ri_src, sizeof g_rs.sig_ri_src, "%s", ri->src ? ri->src : "(null)");
    g_rs.sig_ri = true;
  }
  g_rs.ci_after = cr_get_checkpoint_info() != nullptr;
  return 0;
}
int cb_restart_tc(void*) {
  int r = cr_checkpoint(0);
  g_rs.tc_rc = r;
  if (const struct cr_restart_info* ri = cr_get_restart_info()) {
    g_rs.tc_ri_requester = ri->requester;
    g_rs.tc_ri = true;
  }
  return 0;
}
void hook_count(cr_hook_event_t ev) {
  ++g_rs.hooks[ev];
}

// "key value" lines of the copy's result file.
std::string value_of(const std::string& text, const std::string& key) {
  size_t p = text.find("\n" + key + " ");
  if (p == std::string::npos) return "(missing)";
  size_t start = p + key.size() + 2;
  return text.substr(start, text.find('\n', start) - start);
}

TEST_F(Libcr, RestartedCopySeesTheRestart) {
  for (auto& h : g_rs.hooks) h = 0;
  g_rs.sig_rc = g_rs.tc_rc = -100;
  g_rs.sig_ri = g_rs.tc_ri = false;
  reg(cb_restart_sig, nullptr, CR_SIGNAL_CONTEXT);
  reg(cb_restart_tc, nullptr, CR_THREAD_CONTEXT);
  for (int e = 0; e < CR_NUM_HOOKS; ++e) hook(static_cast<cr_hook_event_t>(e), hook_count);
  const std::string result = dir_.path() + "/copy-result";
  const pid_t original = getpid();
  // A cr_init thread without callbacks: CR_HOOK_RSTRT_NO_CALLBACKS in the copy.
  std::atomic<bool> stop{false}, started{false};
  std::thread worker([&] {
    cr_init();
    started = true;
    while (!stop) sleep_ms(1);
  });
  while (!started) sleep_ms(1);

  ImageFile img(dir_);
  cr_checkpoint_args_t a = self_args(img.fd());
  cr_checkpoint_handle_t h = 0;
  int rc = cr_request_checkpoint(&a, &h);
  if (g_rs.sig_rc > 0 || g_rs.tc_rc > 0) {
    // ---- the restarted copy ----
    errno = 0;
    int poll = cr_poll_checkpoint(&h, nullptr);
    int poll_errno = errno;
    // The other threads' side of the restart (the thread-context callback, the hooks of the
    // thread without callbacks) runs on their own threads and may come after ours on a busy
    // machine: give them up to 10 s before the result is taken.
    for (int i = 0; i < 10000; ++i) {
      if (g_rs.tc_rc.load() != -100 && g_rs.hooks[CR_HOOK_RSTRT_THREAD_CONTEXT].load() > 0 &&
          g_rs.hooks[CR_HOOK_RSTRT_NO_CALLBACKS].load() > 0 && cr_status() == CR_STATE_IDLE)
        break;
      sleep_ms(1);
    }
    char buf[8192];
    int n = snprintf(buf, sizeof buf,
                     "\nrequest %d\nsig_rc %d\ntc_rc %d\nsig_ri %d\nsig_ri_requester %d\n"
                     "sig_ri_src %s\ntc_ri %d\ntc_ri_requester %d\nci_after %d\npoll %d\n"
                     "poll_errno %d\nhook_rstrt_sig %d\nhook_rstrt_tc %d\nhook_cont_sig %d\n"
                     "hook_cont_tc %d\nhook_rstrt_none %d\nstatus %d\nend 1\n",
                     rc, g_rs.sig_rc.load(), g_rs.tc_rc.load(), g_rs.sig_ri.load() ? 1 : 0,
                     g_rs.sig_ri_requester.load(), g_rs.sig_ri_src, g_rs.tc_ri.load() ? 1 : 0,
                     g_rs.tc_ri_requester.load(), g_rs.ci_after.load() ? 1 : 0, poll, poll_errno,
                     g_rs.hooks[CR_HOOK_RSTRT_SIGNAL_CONTEXT].load(),
                     g_rs.hooks[CR_HOOK_RSTRT_THREAD_CONTEXT].load(),
                     g_rs.hooks[CR_HOOK_CONT_SIGNAL_CONTEXT].load(),
                     g_rs.hooks[CR_HOOK_CONT_THREAD_CONTEXT].load(),
                     g_rs.hooks[CR_HOOK_RSTRT_NO_CALLBACKS].load(), cr_status());
    std::string tmp = result + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      (void)!::write(fd, buf, static_cast<size_t>(n));
      ::close(fd);
      ::rename(tmp.c_str(), result.c_str());
    }
    _exit(42);
  }
  // ---- the original ----
  stop = true;
  worker.join();
  ASSERT_EQ(rc, 0) << cr_strerror(errno);
  errno = 0;
  ASSERT_GT(cr_poll_checkpoint(&h, nullptr), 0) << cr_strerror(errno);
  EXPECT_EQ(g_rs.sig_rc.load(), 0);
  EXPECT_EQ(g_rs.tc_rc.load(), 0);
  EXPECT_EQ(g_rs.hooks[CR_HOOK_CONT_SIGNAL_CONTEXT].load(), 1);
  EXPECT_EQ(g_rs.hooks[CR_HOOK_RSTRT_SIGNAL_CONTEXT].load(), 0);

  int fd = ::open(img.path().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  cr_restart_args_t ra;
  cr_initialize_restart_args_t(&ra);
  ra.cr_fd = fd;
  ra.cr_flags = 0;  // not CR_RSTRT_RESTORE_PID: our pid is taken (by us)
  cr_restart_handle_t rh = 0;
  ASSERT_EQ(cr_request_restart(&ra, &rh), 0) << cr_strerror(errno);
  char* msg = nullptr;
  errno = 0;
  int child = cr_poll_restart_msg(&rh, nullptr, &msg);
  ::close(fd);
  ASSERT_GT(child, 0) << cr_strerror(errno) << ": " << (msg ? msg : "");
  free(msg);

  std::string text;
  bool done = eventually(
      [&] {
        int r = ::open(result.c_str(), O_RDONLY | O_CLOEXEC);
        if (r < 0) return false;
        char buf[8192];
        ssize_t n = ::read(r, buf, sizeof buf - 1);
        ::close(r);
        text.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
        return true;
      },
      20000);
  // The copy (and the namespace's init, our child) end; make sure.
  bool ended = eventually([&] { return waitpid(child, nullptr, WNOHANG) == child; }, 5000);
  if (!ended) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
  }
  ASSERT_TRUE(done) << "the restarted copy wrote no result";
  EXPECT_EQ(value_of(text, "end"), "1") << text;
  EXPECT_EQ(value_of(text, "request"), "0") << text;
  EXPECT_EQ(value_of(text, "sig_rc"), std::to_string(original))
      << "cr_checkpoint() in a restarted signal-context callback: the restart's requester";
  EXPECT_EQ(value_of(text, "tc_rc"), std::to_string(original))
      << "cr_checkpoint() in a restarted thread-context callback";
  EXPECT_EQ(value_of(text, "sig_ri"), "1") << "cr_get_restart_info() after a restart";
  EXPECT_EQ(value_of(text, "sig_ri_requester"), std::to_string(original));
  EXPECT_EQ(value_of(text, "sig_ri_src"), img.canonical());
  EXPECT_EQ(value_of(text, "tc_ri"), "1");
  EXPECT_EQ(value_of(text, "tc_ri_requester"), std::to_string(original));
  EXPECT_EQ(value_of(text, "ci_after"), "0");
  EXPECT_EQ(value_of(text, "poll"), std::to_string(CR_POLL_CHKPT_ERR_POST));
  EXPECT_EQ(value_of(text, "poll_errno"), std::to_string(CR_ERESTARTED))
      << "the request's handle in the restarted copy";
  EXPECT_EQ(value_of(text, "hook_rstrt_sig"), "1");
  EXPECT_EQ(value_of(text, "hook_rstrt_tc"), "1");
  EXPECT_EQ(value_of(text, "hook_cont_sig"), "0")
      << "the copy never continued (it was imaged first)";
  EXPECT_EQ(value_of(text, "hook_cont_tc"), "0");
  EXPECT_EQ(value_of(text, "hook_rstrt_none"), "1") << "in the cr_init thread without callbacks";
  EXPECT_EQ(value_of(text, "status"), std::to_string(CR_STATE_IDLE));
}

}  // namespace
