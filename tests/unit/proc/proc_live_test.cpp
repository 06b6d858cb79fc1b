// Live tests against this test process's own /proc entries.
#include <fcntl.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "proc/proc.hpp"

namespace crkit::proc {
namespace {

constexpr pid_t kNoSuchPid = 0x3fffffff;  // above PID_MAX_LIMIT (4M): never a live pid

template <class T>
void expect_no_such_process(const Result<T>& r, const char* what) {
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_EQ(r.error().code, ESRCH) << what << ": " << r.error().message;
  EXPECT_NE(r.error().message.find(std::to_string(kNoSuchPid)), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("does not exist"), std::string::npos) << r.error().message;
}

bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(Live, ReadFileAndLink) {
  auto exe = read_link("/proc/self/exe");
  ASSERT_TRUE(exe.ok()) << exe.error().message;
  EXPECT_EQ(exe->front(), '/');
  EXPECT_NE(exe->find("proc"), std::string::npos);

  // /proc files report st_size 0 but read_file still gets the (multi-page) content.
  auto smaps = read_file("/proc/self/smaps");
  ASSERT_TRUE(smaps.ok()) << smaps.error().message;
  EXPECT_GT(smaps->size(), 8192u);
  EXPECT_EQ(smaps->back(), '\n');

  auto missing = read_file("/nonexistent/crkit-test");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_EQ(missing.error().message, "reading /nonexistent/crkit-test: No such file or directory");

  auto badlink = read_link("/proc/self/status");
  ASSERT_FALSE(badlink.ok());
  EXPECT_EQ(badlink.error().code, EINVAL);
  EXPECT_NE(badlink.error().message.find("/proc/self/status"), std::string::npos);
}

TEST(Live, ReadMapsHasStackAndOwnBinary) {
  auto exe = read_link("/proc/self/exe");
  ASSERT_TRUE(exe.ok()) << exe.error().message;
  auto maps = read_maps(getpid());
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  bool stack = false, binary_exec = false;
  auto here = reinterpret_cast<uint64_t>(&expect_no_such_process<int>);
  for (const auto& e : *maps) {
    if (e.path == "[stack]") stack = true;
    if (e.path == *exe && e.exec && e.start <= here && here < e.end) binary_exec = true;
  }
  EXPECT_TRUE(stack);
  EXPECT_TRUE(binary_exec) << "no executable mapping of " << *exe << " containing our code";
}

TEST(Live, ReadSmapsMatchesMaps) {
  auto maps = read_maps(getpid());
  auto smaps = read_smaps(getpid());
  ASSERT_TRUE(maps.ok()) << maps.error().message;
  ASSERT_TRUE(smaps.ok()) << smaps.error().message;
  ASSERT_FALSE(smaps->empty());
  for (const auto& e : *smaps) {
    EXPECT_FALSE(e.vm_flags.empty()) << e.path;
    if (e.path == "[stack]") {
      EXPECT_TRUE(e.has_flag("gd"));
    }
    if (e.read) {
      EXPECT_TRUE(e.has_flag("rd")) << e.path;
    }
  }
}

TEST(Live, ReadStatAndStatus) {
  auto st = read_stat(getpid());
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->pid, getpid());
  EXPECT_EQ(st->ppid, getppid());
  EXPECT_EQ(st->pgrp, getpgrp());
  EXPECT_EQ(st->session, getsid(0));
  EXPECT_EQ(st->state, 'R');
  EXPECT_GE(st->num_threads, 1);
  EXPECT_NE(st->start_code, 0u);
  EXPECT_NE(st->start_stack, 0u);

  auto ts = read_task_stat(getpid(), gettid());
  ASSERT_TRUE(ts.ok()) << ts.error().message;
  EXPECT_EQ(ts->pid, gettid());
  EXPECT_EQ(ts->comm, st->comm);

  auto status = read_status(getpid());
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_EQ(status->pid, getpid());
  EXPECT_EQ(status->tgid, getpid());
  EXPECT_EQ(status->ppid, getppid());
  EXPECT_EQ(status->name, st->comm);
  EXPECT_EQ(status->uid[0], getuid());
  EXPECT_EQ(status->uid[1], geteuid());
  EXPECT_EQ(status->gid[0], getgid());
  ASSERT_FALSE(status->nspid.empty());
  EXPECT_EQ(status->nspid.back(), getpid());
  mode_t mask = umask(0);
  umask(mask);
  EXPECT_EQ(status->umask, mask);
}

TEST(Live, StatusSeesBlockedSignalInThread) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::thread t([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    tid = gettid();
    while (!done) std::this_thread::yield();
  });
  while (tid == 0) std::this_thread::yield();
  auto st = read_task_status(getpid(), tid.load());
  done = true;
  t.join();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->pid, tid.load());
  EXPECT_EQ(st->tgid, getpid());
  EXPECT_TRUE(st->sig_blk & (1ull << (SIGUSR2 - 1)));
}

TEST(Live, ListThreadsIncludesNewThread) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::thread t([&] {
    tid = gettid();
    while (!done) std::this_thread::yield();
  });
  while (tid == 0) std::this_thread::yield();
  auto threads = list_threads(getpid());
  auto stat = read_stat(getpid());
  done = true;
  t.join();
  ASSERT_TRUE(threads.ok()) << threads.error().message;
  EXPECT_TRUE(contains(*threads, getpid()));
  EXPECT_TRUE(contains(*threads, tid.load()));
  EXPECT_TRUE(std::is_sorted(threads->begin(), threads->end()));
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->num_threads, static_cast<int64_t>(threads->size()));
}

TEST(Live, ListChildrenOfForkedChild) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  auto kids = list_children(getpid());
  kill(child, SIGKILL);
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(kids.ok()) << kids.error().message;
  EXPECT_TRUE(contains(*kids, child));
  EXPECT_TRUE(std::is_sorted(kids->begin(), kids->end()));
  EXPECT_EQ(std::adjacent_find(kids->begin(), kids->end()), kids->end());

  auto none = list_children(child);  // reaped: gone
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ESRCH);
}

TEST(Live, ListFdsAndFdinfo) {
  char path[] = "/tmp/crkit-proc-test-XXXXXX";
  int tmp = mkstemp(path);
  ASSERT_GE(tmp, 0);
  close(tmp);
  int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
  unlink(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "hello", 5), 5);
  ASSERT_EQ(lseek(fd, 0, SEEK_CUR), 5);

  auto fds = list_fds(getpid());
  ASSERT_TRUE(fds.ok()) << fds.error().message;
  EXPECT_TRUE(contains(*fds, fd));
  EXPECT_TRUE(std::is_sorted(fds->begin(), fds->end()));

  auto info = read_fdinfo(getpid(), fd);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  close(fd);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->pos, 5u);
  EXPECT_TRUE(info->flags & O_APPEND);
  EXPECT_TRUE(info->flags & 02000000);
  EXPECT_EQ(info->flags & O_ACCMODE, static_cast<uint32_t>(O_RDWR));
  EXPECT_GT(info->mnt_id, 0);
  EXPECT_EQ(info->ino, st.st_ino);

  // A closed fd of a live process is ENOENT (not ESRCH) and names the file.
  auto gone = read_fdinfo(getpid(), fd);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ENOENT);
  EXPECT_EQ(gone.error().message,
            fmt::format("reading /proc/{}/fdinfo/{}: No such file or directory", getpid(), fd));
}

TEST(Live, PagemapPresentVsUntouched) {
  constexpr size_t kPage = 4096;
  void* p = mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  madvise(p, 4 * kPage, MADV_NOHUGEPAGE);  // a THP fault would populate untouched pages
  auto* bytes = static_cast<volatile char*>(p);
  bytes[0] = 1;          // page 0 touched
  bytes[2 * kPage] = 1;  // page 2 touched; pages 1 and 3 never touched
  auto start = reinterpret_cast<uint64_t>(p);

  auto pm = Pagemap::open(getpid());
  ASSERT_TRUE(pm.ok()) << pm.error().message;
  std::vector<PagemapEntry> out(17);  // replaced, not appended to
  auto st = pm->read(start, start + 4 * kPage, out);
  ASSERT_TRUE(st.ok()) << st.error().message;
  ASSERT_EQ(out.size(), 4u);
  EXPECT_TRUE(out[0].present());
  EXPECT_FALSE(out[1].present());
  EXPECT_TRUE(out[2].present());
  EXPECT_FALSE(out[3].present());
  EXPECT_FALSE(out[1].swapped());
  EXPECT_TRUE(out[0].exclusive());
  EXPECT_FALSE(out[0].file_or_shared_anon());

  // Move: the moved-from object no longer owns the fd.
  Pagemap moved = std::move(*pm);
  std::vector<PagemapEntry> again;
  ASSERT_TRUE(moved.read(start, start + kPage, again).ok());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].present());
  auto st2 = pm->read(start, start + kPage, again);
  EXPECT_FALSE(st2.ok());

  auto other = Pagemap::open(getpid());
  ASSERT_TRUE(other.ok());
  *other = std::move(moved);
  ASSERT_TRUE(other->read(start, start, again).ok());
  EXPECT_TRUE(again.empty());

  auto unaligned = other->read(start + 1, start + kPage, again);
  ASSERT_FALSE(unaligned.ok());
  EXPECT_EQ(unaligned.error().code, EINVAL);
  unaligned = other->read(start, start + kPage + 8, again);
  EXPECT_EQ(unaligned.error().code, EINVAL);
  unaligned = other->read(start + kPage, start, again);
  EXPECT_EQ(unaligned.error().code, EINVAL);
  munmap(p, 4 * kPage);
}

TEST(Live, PagemapLargeRangeSpansChunks) {
  constexpr size_t kPage = 4096, kPages = 20000;  // > one 8192-entry pread chunk
  void* p =
      mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  madvise(p, kPages * kPage, MADV_NOHUGEPAGE);
  auto* bytes = static_cast<volatile char*>(p);
  for (size_t i = 0; i < kPages; i += 3) bytes[i * kPage] = 1;
  auto start = reinterpret_cast<uint64_t>(p);
  auto pm = Pagemap::open(getpid());
  ASSERT_TRUE(pm.ok()) << pm.error().message;
  std::vector<PagemapEntry> out;
  auto st = pm->read(start, start + kPages * kPage, out);
  ASSERT_TRUE(st.ok()) << st.error().message;
  ASSERT_EQ(out.size(), kPages);
  size_t wrong = 0;
  for (size_t i = 0; i < kPages; ++i) wrong += out[i].present() != (i % 3 == 0);
  EXPECT_EQ(wrong, 0u);
  munmap(p, kPages * kPage);
}

TEST(Live, AuxvEndsInAtNullAndHasPageSize) {
  auto auxv = read_auxv(getpid());
  ASSERT_TRUE(auxv.ok()) << auxv.error().message;
  const auto& a = *auxv;
  ASSERT_GE(a.size(), 2u);
  ASSERT_EQ(a.size() % 2, 0u);
  EXPECT_EQ(a[a.size() - 2], static_cast<uint64_t>(AT_NULL));
  EXPECT_EQ(a[a.size() - 1], 0u);
  bool pagesz = false, entry = false;
  for (size_t i = 0; i + 1 < a.size(); i += 2) {
    if (a[i] == AT_PAGESZ) pagesz = a[i + 1] == 4096;
    if (a[i] == AT_ENTRY) entry = a[i + 1] == getauxval(AT_ENTRY);
    if (i + 2 < a.size()) {
      EXPECT_NE(a[i], static_cast<uint64_t>(AT_NULL));
    }
  }
  EXPECT_TRUE(pagesz);
  EXPECT_TRUE(entry);
}

TEST(Live, NonexistentPidIsEsrch) {
  expect_no_such_process(read_maps(kNoSuchPid), "read_maps");
  expect_no_such_process(read_smaps(kNoSuchPid), "read_smaps");
  expect_no_such_process(read_stat(kNoSuchPid), "read_stat");
  expect_no_such_process(read_task_stat(kNoSuchPid, kNoSuchPid), "read_task_stat");
  expect_no_such_process(read_status(kNoSuchPid), "read_status");
  expect_no_such_process(read_task_status(kNoSuchPid, 1), "read_task_status");
  expect_no_such_process(read_fdinfo(kNoSuchPid, 0), "read_fdinfo");
  expect_no_such_process(list_threads(kNoSuchPid), "list_threads");
  expect_no_such_process(list_fds(kNoSuchPid), "list_fds");
  expect_no_such_process(list_children(kNoSuchPid), "list_children");
  expect_no_such_process(read_auxv(kNoSuchPid), "read_auxv");
  expect_no_such_process(Pagemap::open(kNoSuchPid), "Pagemap::open");
  expect_no_such_process(read_link(fmt::format("/proc/{}/exe", kNoSuchPid)), "read_link");
  auto r = read_maps(kNoSuchPid);
  EXPECT_EQ(r.error().message, fmt::format("reading /proc/{}/maps: process {} does not exist",
                                           kNoSuchPid, kNoSuchPid));
}

TEST(Live, NonexistentThreadIsEsrch) {
  auto r = read_task_stat(getpid(), kNoSuchPid);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ESRCH);
  EXPECT_NE(r.error().message.find(fmt::format("thread {} of process {}", kNoSuchPid, getpid())),
            std::string::npos)
      << r.error().message;
}

TEST(Live, ExitedChildIsEsrch) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  auto r = read_stat(child);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ESRCH);
  EXPECT_NE(r.error().message.find(std::to_string(child)), std::string::npos);
}

}  // namespace
}  // namespace crkit::proc
