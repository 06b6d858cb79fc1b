/*
 * files_signals - open files, an unlinked file, pending signals and a sigaltstack that must
 * all survive a checkpoint and restart.
 *
 *   files_signals OUTFILE WORKDIR [SECONDS]     (SECONDS defaults to 3)
 *
 * Setup (WORKDIR must exist):
 *   - chdir(WORKDIR);
 *   - WORKDIR/data.txt is created with 256 known bytes, opened O_RDWR and positioned at
 *     offset 100;
 *   - WORKDIR/tmp.bin is created with 64 KiB of known bytes, kept open O_RDWR at offset
 *     12345, and unlink()ed;
 *   - a SIGUSR1 handler (counts calls) is installed, SIGUSR1 is blocked and raised, so it
 *     stays pending for this thread; SIGRTMIN+2 (handler with SA_SIGINFO) is blocked and
 *     queued to the process with sigqueue(value 4242), so it is pending process-wide with
 *     its siginfo;
 *   - a SIGUSR2 handler with SA_ONSTACK|SA_SIGINFO runs on a sigaltstack allocated with
 *     mmap.
 * Then it becomes ready ($CRKIT_READY) and sleeps for SECONDS in short steps. Finally it
 * checks: the cwd; the offset of data.txt is still 100 and reading there gives the
 * expected bytes; the unlinked file still has no name, its size, offset and content
 * (pread) are intact; both signals are still blocked and pending; unblocking SIGUSR1 runs
 * its handler once; unblocking SIGRTMIN+2 delivers si_code SI_QUEUE and value 4242;
 * sigaltstack() returns the same stack; the SIGUSR2 action is unchanged; raise(SIGUSR2)
 * runs the handler on the alternate stack.
 *
 * Output: one line starting with "ok " (no addresses or paths, the same for every run) in
 * OUTFILE; exit 0.
 */
#include "example_protocol.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define DATA_SIZE 256
#define DATA_OFFSET 100
#define TMP_SIZE (64 * 1024)
#define TMP_OFFSET 12345
#define ALT_SIZE (64 * 1024)
#define RT_VALUE 4242

static volatile sig_atomic_t usr1_count;
static volatile sig_atomic_t rt_count;
static volatile int rt_code;
static volatile int rt_value;
static volatile sig_atomic_t usr2_count;
static volatile uintptr_t usr2_local_addr;
static volatile int usr2_onstack_flag;
static volatile int usr2_signo;

static void on_usr1(int sig) {
  (void)sig;
  usr1_count++;
}

static void on_rt(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  rt_count++;
  rt_code = si->si_code;
  rt_value = si->si_value.sival_int;
}

static void on_usr2(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  volatile int local = 0;
  usr2_local_addr = (uintptr_t)&local;
  stack_t cur;
  usr2_onstack_flag = (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_ONSTACK)) ? 1 : 0;
  usr2_signo = si->si_signo;
  usr2_count++;
}

static unsigned char data_byte(size_t i) { return (unsigned char)('A' + (i * 7) % 26); }
static unsigned char tmp_byte(size_t i) { return (unsigned char)((i * 131 + (i >> 8)) & 0xff); }

int main(int argc, char **argv) {
  ex_prog = "files_signals";
  if (argc != 3 && argc != 4) ex_usage("OUTFILE WORKDIR [SECONDS]");
  const char *outfile = argv[1];
  const char *workdir = argv[2];
  const long seconds = argc == 4 ? ex_parse_long("SECONDS", argv[3], 0, 3600) : 3;
  const int rtsig = SIGRTMIN + 2;

  /* The output file is opened by absolute or cwd-relative path before the chdir. */
  char outpath[2 * PATH_MAX + 2];
  if (outfile[0] == '/') {
    snprintf(outpath, sizeof outpath, "%s", outfile);
  } else {
    char cwd0[PATH_MAX];
    if (getcwd(cwd0, sizeof cwd0) == NULL) ex_fail("getcwd: %s", strerror(errno));
    if (snprintf(outpath, sizeof outpath, "%s/%s", cwd0, outfile) >= (int)sizeof outpath)
      ex_fail("OUTFILE path too long");
  }
  ex_write_file(outpath, ""); /* fail early if OUTFILE cannot be written */
  char wd[PATH_MAX];
  if (realpath(workdir, wd) == NULL) ex_fail("WORKDIR %s: %s", workdir, strerror(errno));
  if (chdir(wd) != 0) ex_fail("chdir %s: %s", wd, strerror(errno));

  /* data.txt: known content, open O_RDWR at offset 100. */
  unsigned char data[DATA_SIZE];
  for (size_t i = 0; i < DATA_SIZE; i++) data[i] = data_byte(i);
  int dfd = open("data.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (dfd < 0) ex_fail("open data.txt: %s", strerror(errno));
  if (ex_write_all(dfd, data, DATA_SIZE) != 0) ex_fail("write data.txt: %s", strerror(errno));
  if (lseek(dfd, DATA_OFFSET, SEEK_SET) != DATA_OFFSET) ex_fail("lseek data.txt: %s", strerror(errno));

  /* tmp.bin: known content, kept open, unlinked. */
  static unsigned char tmp[TMP_SIZE];
  for (size_t i = 0; i < TMP_SIZE; i++) tmp[i] = tmp_byte(i);
  int tfd = open("tmp.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (tfd < 0) ex_fail("open tmp.bin: %s", strerror(errno));
  if (ex_write_all(tfd, tmp, TMP_SIZE) != 0) ex_fail("write tmp.bin: %s", strerror(errno));
  if (lseek(tfd, TMP_OFFSET, SEEK_SET) != TMP_OFFSET) ex_fail("lseek tmp.bin: %s", strerror(errno));
  if (unlink("tmp.bin") != 0) ex_fail("unlink tmp.bin: %s", strerror(errno));
  memset(tmp, 0, sizeof tmp); /* the only copy is now the unlinked file */

  /* Signals. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) != 0) ex_fail("sigaction SIGUSR1: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_rt;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(rtsig, &sa, NULL) != 0) ex_fail("sigaction SIGRTMIN+2: %s", strerror(errno));

  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, rtsig);
  if (sigprocmask(SIG_BLOCK, &block, NULL) != 0) ex_fail("sigprocmask: %s", strerror(errno));
  if (raise(SIGUSR1) != 0) ex_fail("raise SIGUSR1 failed");
  if (sigqueue(getpid(), rtsig, (union sigval){.sival_int = RT_VALUE}) != 0)
    ex_fail("sigqueue: %s", strerror(errno));

  void *alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (alt == MAP_FAILED) ex_fail("mmap altstack: %s", strerror(errno));
  stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) ex_fail("sigaltstack: %s", strerror(errno));
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr2;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR2, &sa, NULL) != 0) ex_fail("sigaction SIGUSR2: %s", strerror(errno));

  ex_ready(NULL);
  for (long i = 0; i < seconds * 10; i++) ex_sleep_ms(100);

  /* cwd */
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == NULL) ex_fail("getcwd: %s", strerror(errno));
  if (strcmp(cwd, wd) != 0) ex_fail("cwd is %s, expected %s", cwd, wd);

  /* data.txt */
  off_t pos = lseek(dfd, 0, SEEK_CUR);
  if (pos != DATA_OFFSET) ex_fail("data.txt offset is %lld, expected %d", (long long)pos, DATA_OFFSET);
  struct stat st;
  if (fstat(dfd, &st) != 0) ex_fail("fstat data.txt: %s", strerror(errno));
  if (st.st_size != DATA_SIZE) ex_fail("data.txt size is %lld, expected %d", (long long)st.st_size, DATA_SIZE);
  int fl = fcntl(dfd, F_GETFL);
  if (fl < 0 || (fl & O_ACCMODE) != O_RDWR) ex_fail("data.txt is no longer open O_RDWR (flags 0%o)", fl);
  unsigned char buf[DATA_SIZE];
  ssize_t n = read(dfd, buf, DATA_SIZE);
  if (n != DATA_SIZE - DATA_OFFSET) ex_fail("read data.txt returned %zd, expected %d", n, DATA_SIZE - DATA_OFFSET);
  if (memcmp(buf, data + DATA_OFFSET, (size_t)n) != 0) ex_fail("data.txt content differs at offset 100");

  /* the unlinked tmp.bin */
  if (fstat(tfd, &st) != 0) ex_fail("fstat tmp.bin: %s", strerror(errno));
  if (st.st_nlink != 0) ex_fail("unlinked tmp.bin has %lu links, expected 0", (unsigned long)st.st_nlink);
  if (st.st_size != TMP_SIZE) ex_fail("unlinked tmp.bin size is %lld, expected %d", (long long)st.st_size, TMP_SIZE);
  if (access("tmp.bin", F_OK) == 0) ex_fail("tmp.bin has a name again in %s", wd);
  pos = lseek(tfd, 0, SEEK_CUR);
  if (pos != TMP_OFFSET) ex_fail("tmp.bin offset is %lld, expected %d", (long long)pos, TMP_OFFSET);
  if (pread(tfd, tmp, TMP_SIZE, 0) != TMP_SIZE) ex_fail("pread tmp.bin: %s", strerror(errno));
  for (size_t i = 0; i < TMP_SIZE; i++)
    if (tmp[i] != tmp_byte(i)) ex_fail("unlinked tmp.bin differs at byte %zu", i);

  /* blocked and pending signals */
  sigset_t cur;
  if (sigprocmask(SIG_BLOCK, NULL, &cur) != 0) ex_fail("sigprocmask: %s", strerror(errno));
  if (!sigismember(&cur, SIGUSR1) || !sigismember(&cur, rtsig)) ex_fail("SIGUSR1/SIGRTMIN+2 no longer blocked");
  if (sigismember(&cur, SIGUSR2)) ex_fail("SIGUSR2 became blocked");
  sigset_t pend;
  if (sigpending(&pend) != 0) ex_fail("sigpending: %s", strerror(errno));
  if (!sigismember(&pend, SIGUSR1)) ex_fail("SIGUSR1 is no longer pending");
  if (!sigismember(&pend, rtsig)) ex_fail("SIGRTMIN+2 is no longer pending");
  if (usr1_count != 0 || rt_count != 0) ex_fail("a blocked signal's handler ran early");

  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, SIGUSR1);
  if (sigprocmask(SIG_UNBLOCK, &one, NULL) != 0) ex_fail("sigprocmask: %s", strerror(errno));
  if (usr1_count != 1) ex_fail("SIGUSR1 handler ran %d times after unblocking, expected 1", (int)usr1_count);
  sigemptyset(&one);
  sigaddset(&one, rtsig);
  if (sigprocmask(SIG_UNBLOCK, &one, NULL) != 0) ex_fail("sigprocmask: %s", strerror(errno));
  if (rt_count != 1) ex_fail("SIGRTMIN+2 handler ran %d times after unblocking, expected 1", (int)rt_count);
  if (rt_code != SI_QUEUE || rt_value != RT_VALUE)
    ex_fail("SIGRTMIN+2 siginfo: si_code %d value %d, expected %d and %d", rt_code, rt_value, SI_QUEUE, RT_VALUE);
  if (sigpending(&pend) != 0) ex_fail("sigpending: %s", strerror(errno));
  if (sigismember(&pend, SIGUSR1) || sigismember(&pend, rtsig)) ex_fail("signals still pending after delivery");

  /* sigaltstack and the SIGUSR2 action */
  stack_t q;
  if (sigaltstack(NULL, &q) != 0) ex_fail("sigaltstack query: %s", strerror(errno));
  if (q.ss_sp != alt || q.ss_size != ALT_SIZE || q.ss_flags != 0)
    ex_fail("sigaltstack is sp=%p size=%zu flags=%d, expected sp=%p size=%d flags=0", q.ss_sp, q.ss_size,
            q.ss_flags, alt, ALT_SIZE);
  struct sigaction old;
  if (sigaction(SIGUSR2, NULL, &old) != 0) ex_fail("sigaction query: %s", strerror(errno));
  if (old.sa_sigaction != on_usr2 || (old.sa_flags & (SA_SIGINFO | SA_ONSTACK)) != (SA_SIGINFO | SA_ONSTACK))
    ex_fail("SIGUSR2 action changed (flags 0x%x)", (unsigned)old.sa_flags);
  if (raise(SIGUSR2) != 0) ex_fail("raise SIGUSR2 failed");
  if (usr2_count != 1 || usr2_signo != SIGUSR2) ex_fail("SIGUSR2 handler did not run");
  uintptr_t lo = (uintptr_t)alt, hi = lo + ALT_SIZE;
  if (usr2_local_addr < lo || usr2_local_addr >= hi)
    ex_fail("SIGUSR2 handler ran at %#lx, outside the alternate stack [%#lx, %#lx)", (unsigned long)usr2_local_addr,
            (unsigned long)lo, (unsigned long)hi);
  if (!usr2_onstack_flag) ex_fail("SIGUSR2 handler: sigaltstack() did not report SS_ONSTACK");

  char line[256];
  snprintf(line, sizeof line,
           "ok data_offset=%d data=ok unlinked_size=%d unlinked_offset=%d unlinked=ok "
           "pending=SIGUSR1,SIGRTMIN+2 usr1_handler=%d rt_value=%d altstack=ok\n",
           DATA_OFFSET, TMP_SIZE, TMP_OFFSET, (int)usr1_count, rt_value);
  ex_write_file(outpath, line);
  fprintf(stderr, "files_signals: done, %s", line);
  close(dfd);
  close(tfd);
  return 0;
}
