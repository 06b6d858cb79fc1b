// The injection layer on a real child process: freezing, remote system calls, remote
// memory, and that a frozen-then-released target is left exactly as it was.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "engine/remote_scratch.hpp"
#include "inject/cow_copy.hpp"
#include "inject/freezer.hpp"
#include "inject/ptrace_thread.hpp"
#include "inject/remote_memory.hpp"
#include "inject/remote_syscall.hpp"
#include "proc/proc.hpp"

namespace {

using namespace crkit;

// A child that spins incrementing a counter in shared memory, so we can see it runs.
struct Spinner {
  pid_t pid = -1;
  volatile uint64_t* counter = nullptr;
  Spinner() {
    void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    counter = static_cast<volatile uint64_t*>(m);
    pid = fork();
    if (pid == 0) {
      for (;;) *counter = *counter + 1;
    }
  }
  ~Spinner() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    munmap(const_cast<uint64_t*>(counter), 4096);
  }
  bool running() const {
    uint64_t a = *counter;
    usleep(20000);
    return *counter != a;
  }
};

TEST(Freezer, StopsAndReleasesAllThreads) {
  Spinner s;
  auto f = inject::FrozenProcess::freeze(s.pid);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_FALSE(s.running());
  auto st = proc::read_status(s.pid);
  ASSERT_TRUE(st.ok());
  EXPECT_NE(st->tracer_pid, 0);
  f->release();
  EXPECT_TRUE(s.running());
  st = proc::read_status(s.pid);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->tracer_pid, 0) << "the target must not stay traced";
}

TEST(Freezer, DestructorReleases) {
  Spinner s;
  {
    auto f = inject::FrozenProcess::freeze(s.pid);
    ASSERT_TRUE(f.ok()) << f.error().message;
  }
  EXPECT_TRUE(s.running());
}

TEST(Freezer, NonexistentProcessIsEsrch) {
  auto f = inject::FrozenProcess::freeze(0x3ffffff0);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().code, ESRCH);
  EXPECT_NE(f.error().message.find("does not exist"), std::string::npos);
}

TEST(RemoteSyscall, RunsInTargetAndRestoresRegisters) {
  Spinner s;
  auto f = inject::FrozenProcess::freeze(s.pid);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto site = inject::find_syscall_site(s.pid);
  ASSERT_TRUE(site.ok()) << site.error().message;
  auto before = inject::get_regs(s.pid);
  auto mask_before = inject::get_sigmask(s.pid);
  ASSERT_TRUE(before.ok() && mask_before.ok());

  inject::RemoteCaller rc(s.pid, *site);
  auto r = rc.call(SYS_getpid);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, s.pid);

  auto bad = rc.check("closing fd 12345", SYS_close, {12345});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EBADF);
  EXPECT_NE(bad.error().message.find("closing fd 12345"), std::string::npos);

  auto after = inject::get_regs(s.pid);
  auto mask_after = inject::get_sigmask(s.pid);
  ASSERT_TRUE(after.ok() && mask_after.ok());
  EXPECT_EQ(0, std::memcmp(&*before, &*after, sizeof(inject::Regs)));
  EXPECT_EQ(*mask_before, *mask_after);
  f->release();
  EXPECT_TRUE(s.running());
}

// start()/finish(): calls in two processes at once, each with its own result, and both
// processes left exactly as they were.
TEST(RemoteSyscall, StartAndFinishInTwoProcessesAtOnce) {
  Spinner a, b;
  auto fa = inject::FrozenProcess::freeze(a.pid);
  auto fb = inject::FrozenProcess::freeze(b.pid);
  ASSERT_TRUE(fa.ok() && fb.ok());
  auto sa = inject::find_syscall_site(a.pid);
  auto sb = inject::find_syscall_site(b.pid);
  ASSERT_TRUE(sa.ok() && sb.ok());
  auto before_a = inject::get_regs(a.pid);
  auto before_b = inject::get_regs(b.pid);
  ASSERT_TRUE(before_a.ok() && before_b.ok());
  inject::RemoteCaller ra(a.pid, *sa), rb(b.pid, *sb);
  ASSERT_TRUE(ra.start(SYS_getpid).ok());
  ASSERT_TRUE(rb.start(SYS_getpid).ok());
  auto xb = rb.finish();  // in the other order than started
  auto xa = ra.finish();
  ASSERT_TRUE(xa.ok() && xb.ok());
  EXPECT_EQ(*xa, a.pid);
  EXPECT_EQ(*xb, b.pid);
  auto after_a = inject::get_regs(a.pid);
  auto after_b = inject::get_regs(b.pid);
  ASSERT_TRUE(after_a.ok() && after_b.ok());
  EXPECT_EQ(0, std::memcmp(&*before_a, &*after_a, sizeof(inject::Regs)));
  EXPECT_EQ(0, std::memcmp(&*before_b, &*after_b, sizeof(inject::Regs)));
  fa->release();
  fb->release();
  EXPECT_TRUE(a.running());
  EXPECT_TRUE(b.running());
}

// fork_all: one copy-on-write copy per process, each the copy of its own process (its memory
// as of the fork, while the original runs on and changes it).
TEST(CowCopy, ForkAllCopiesEveryProcess) {
  Spinner a, b, c;
  std::vector<inject::FrozenProcess> frozen;
  for (pid_t p : {a.pid, b.pid, c.pid}) {
    auto f = inject::FrozenProcess::freeze(p);
    ASSERT_TRUE(f.ok()) << f.error().message;
    frozen.push_back(std::move(*f));
  }
  std::vector<const inject::FrozenProcess*> ptrs;
  for (const auto& f : frozen) ptrs.push_back(&f);
  auto copies = inject::CowCopy::fork_all(ptrs);
  ASSERT_EQ(copies.size(), 3u);
  const pid_t originals[] = {a.pid, b.pid, c.pid};
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(copies[i].ok()) << copies[i].error().message;
    EXPECT_EQ(copies[i]->parent(), originals[i]);
    EXPECT_GT(copies[i]->pid(), 0);
    // The copy is a child of its original (PPid in /proc/COPY/status).
    auto st = proc::read_status(copies[i]->pid());
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_EQ(st->ppid, originals[i]);
  }
  for (auto& f : frozen) f.release();
  EXPECT_TRUE(a.running() && b.running() && c.running());
  std::vector<pid_t> copy_pids;
  for (auto& cp : copies) copy_pids.push_back(cp->pid());
  for (auto& cp : copies) cp->discard();  // killed, and reaped by its original
  for (pid_t p : copy_pids) EXPECT_NE(::kill(p, 0), 0) << "copy " << p << " is still there";
}

TEST(RemoteScratch, MapWriteReadUnmap) {
  Spinner s;
  auto f = inject::FrozenProcess::freeze(s.pid);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto site = inject::find_syscall_site(s.pid);
  ASSERT_TRUE(site.ok());
  inject::RemoteCaller rc(s.pid, *site);
  auto scratch = engine::RemoteScratch::map(s.pid, rc);
  ASSERT_TRUE(scratch.ok()) << scratch.error().message;
  auto a = scratch->put_string(100, "hello");
  ASSERT_TRUE(a.ok());
  char buf[6] = {};
  ASSERT_TRUE(
      inject::read_memory(s.pid, *a, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf), 6)).ok());
  EXPECT_STREQ(buf, "hello");
  uint64_t addr = scratch->addr();
  ASSERT_TRUE(scratch->unmap(rc).ok());
  auto maps = proc::read_maps(s.pid);
  ASSERT_TRUE(maps.ok());
  for (const auto& m : *maps)
    EXPECT_FALSE(m.start <= addr && addr < m.end) << "scratch area left mapped";
}

TEST(RemoteMemory, ReadsProtNoneThroughProcMem) {
  void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  std::memcpy(m, "secret", 7);
  pid_t pid = fork();
  if (pid == 0) {
    mprotect(m, 4096, PROT_NONE);
    for (;;) pause();
  }
  usleep(50000);
  auto f = inject::FrozenProcess::freeze(pid);
  ASSERT_TRUE(f.ok()) << f.error().message;
  char buf[7] = {};
  auto st = inject::read_memory(pid, reinterpret_cast<uint64_t>(m),
                                std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf), 7));
  EXPECT_TRUE(st.ok()) << st.error().message;
  EXPECT_STREQ(buf, "secret");
  f->release();
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace
