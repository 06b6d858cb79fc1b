/* memtarget: the process (tree) that bench/compare/compare.py checkpoints with crkit and CRIU.
 *
 *   memtarget --mib N [--pattern random|text|zero] [--threads T] [--procs P] --ready FILE
 *
 * Each of the P processes (the root and P-1 children) maps N/P MiB of private anonymous memory,
 * fills every page (random: xorshift data; text: random words from a ~200-word dictionary with
 * spaces and newlines, compresses 3-4x with zstd; zero: every page touched and left zero, one in
 * 200 pages random), computes a checksum, and starts a ticker thread that sleeps 1 ms in a loop
 * (clock_nanosleep, CLOCK_MONOTONIC) and records the longest gap between consecutive ticks: the
 * time the process was frozen, as it felt it. --threads T adds T idle threads per process,
 * each sleeping in a loop. Once every process is ready, the root writes FILE (tmp + rename):
 * the root's PID on the first line, every PID of the tree on the second ("pids R C1 C2 ...").
 *
 * Signals (sent to the root, which forwards them to its children):
 *   SIGUSR1  reset the longest gap to 0
 *   SIGUSR2  each process re-computes its checksum and writes FILE.report.PID (tmp + rename):
 *            "pid N", "maxgap_us N", "verify ok|bad", "mib N", "reports N"
 * The handler only sets a flag and writes a byte to a pipe; the main thread waits on the pipe
 * and does the work. The program holds no sockets and opens files only at startup (stdout and
 * stderr are given by the caller) and for the reports, so that both tools can checkpoint and
 * restart it. It runs until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAX_PROCS 256

enum pattern { PAT_RANDOM, PAT_TEXT, PAT_ZERO };

static const char *ready_path;
static uint64_t *mem;
static size_t mem_bytes;
static uint64_t checksum0;
static unsigned long my_mib;
static pid_t children[MAX_PROCS];
static int nchildren;
static int is_root = 1;

static int sigpipe_fd[2] = {-1, -1};
static volatile sig_atomic_t want_reset, want_report;

static _Atomic int64_t max_gap_ns;
static _Atomic int64_t last_tick_ns;

static void die(const char *what) {
  fprintf(stderr, "memtarget[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
  exit(1);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* ~200 common English words: text that compresses like logs or prose (3-4x with zstd). */
static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on", "be",
    "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which",
    "one", "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been",
    "has", "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its",
    "about", "into", "than", "them", "can", "only", "other", "new", "some", "could", "time",
    "these", "two", "may", "then", "do", "first", "any", "my", "now", "such", "like", "our",
    "over", "man", "me", "even", "most", "made", "after", "also", "did", "many", "before", "must",
    "through", "back", "years", "where", "much", "your", "way", "well", "down", "should",
    "because", "each", "just", "those", "people", "how", "too", "little", "state", "good",
    "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here",
    "between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
    "while", "last", "might", "great", "old", "year", "off", "come", "since", "against", "go",
    "came", "right", "used", "take", "three", "process", "memory", "checkpoint", "restart",
    "server", "request", "error", "warning", "info", "debug", "connection", "thread", "file",
    "buffer", "value", "number", "system", "kernel", "page", "signal", "handler", "timeout",
    "status", "result", "client", "session", "write", "read", "open", "close", "start", "stop",
    "level", "count", "total", "queue", "worker", "cache", "index", "table", "record", "field",
    "user", "group", "node", "cluster", "job", "task", "batch", "input", "output", "data",
    "image", "size", "offset", "length", "frame", "block", "chunk", "stream", "channel",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static void fill_text(char *p, size_t n, uint64_t *seed) {
  /* Uniform word picks; one pick in four is a three-word phrase (consecutive dictionary
   * entries), the kind of repetition real text has: 3.2x with zstd -1, 3.6x with -3. */
  size_t lens[NWORDS];
  for (size_t k = 0; k < NWORDS; k++) lens[k] = strlen(words[k]);
  size_t i = 0;
  unsigned col = 0;
  while (i < n) {
    uint64_t r = xorshift(seed);
    size_t first = (size_t)(r & 0xffff) % NWORDS;
    int count = ((r >> 40) & 3) == 0 ? 3 : 1;
    for (int k = 0; k < count && i < n; k++) {
      size_t w = (first + (size_t)k) % NWORDS, l = lens[w];
      if (i + l + 1 > n) {
        memset(p + i, ' ', n - i);
        i = n;
        break;
      }
      memcpy(p + i, words[w], l);
      i += l;
      col += (unsigned)l + 1;
      p[i++] = (col > 60 + ((r >> 32) & 15)) ? '\n' : ' ';
      if (p[i - 1] == '\n') col = 0;
    }
  }
}

static void fill(enum pattern pat, uint64_t seed) {
  size_t nwords = mem_bytes / 8;
  switch (pat) {
    case PAT_RANDOM:
      for (size_t i = 0; i < nwords; i++) mem[i] = xorshift(&seed);
      break;
    case PAT_TEXT:
      fill_text((char *)mem, mem_bytes, &seed);
      break;
    case PAT_ZERO: {
      size_t pages = mem_bytes / PAGE, per = PAGE / 8;
      for (size_t pg = 0; pg < pages; pg++) {
        uint64_t *q = mem + pg * per;
        if (pg % 200 == 199) {
          for (size_t i = 0; i < per; i++) q[i] = xorshift(&seed);
        } else {
          ((volatile uint64_t *)q)[0] = 0; /* resident, all zero */
        }
      }
      break;
    }
  }
}

static uint64_t compute_checksum(void) {
  /* four independent lanes so that the multiply latency does not bound the speed */
  uint64_t h0 = 0x9e3779b97f4a7c15ULL, h1 = 0xbf58476d1ce4e5b9ULL, h2 = 0x94d049bb133111ebULL,
           h3 = 0x2545f4914f6cdd1dULL;
  const uint64_t k = 0x100000001b3ULL;
  size_t n = mem_bytes / 8, i = 0;
  for (; i + 4 <= n; i += 4) {
    h0 = (h0 ^ mem[i]) * k;
    h1 = (h1 ^ mem[i + 1]) * k;
    h2 = (h2 ^ mem[i + 2]) * k;
    h3 = (h3 ^ mem[i + 3]) * k;
  }
  for (; i < n; i++) h0 = (h0 ^ mem[i]) * k;
  return h0 ^ (h1 << 1 | h1 >> 63) ^ (h2 << 2 | h2 >> 62) ^ (h3 << 3 | h3 >> 61);
}

static void *ticker(void *arg) {
  (void)arg;
  const struct timespec ms = {0, 1000000};
  atomic_store(&last_tick_ns, now_ns());
  for (;;) {
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ms, NULL); /* EINTR: just measure and go on */
    int64_t t = now_ns();
    int64_t gap = t - atomic_exchange(&last_tick_ns, t);
    int64_t cur = atomic_load(&max_gap_ns);
    while (gap > cur && !atomic_compare_exchange_weak(&max_gap_ns, &cur, gap)) {
    }
  }
  return NULL;
}

static void *idler(void *arg) {
  (void)arg;
  const struct timespec t = {0, 50000000};
  for (;;) nanosleep(&t, NULL);
  return NULL;
}

static void on_signal(int sig) {
  int saved = errno;
  if (sig == SIGUSR1) want_reset = 1;
  if (sig == SIGUSR2) want_report = 1;
  char c = 0;
  ssize_t r = write(sigpipe_fd[1], &c, 1); /* full pipe: a wake-up is already pending */
  (void)r;
  errno = saved;
}

static void write_atomic(const char *path, const char *text) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die(tmp);
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len) die("write");
  if (close(fd) != 0) die("close");
  if (rename(tmp, path) != 0) die("rename");
}

static unsigned long reports;

static void do_report(void) {
  /* the gap first: the checksum below takes CPU time from the tickers of the whole tree */
  int64_t gap = atomic_load(&max_gap_ns);
  int64_t since = now_ns() - atomic_load(&last_tick_ns); /* a stall still in progress */
  if (since > gap) gap = since;
  uint64_t sum = compute_checksum();
  reports++;
  char path[4096], text[256];
  snprintf(path, sizeof path, "%s.report.%d", ready_path, (int)getpid());
  snprintf(text, sizeof text, "pid %d\nmaxgap_us %lld\nverify %s\nmib %lu\nreports %lu\n",
           (int)getpid(), (long long)(gap / 1000), sum == checksum0 ? "ok" : "bad", my_mib,
           reports);
  write_atomic(path, text);
}

static void forward(int sig) {
  for (int i = 0; i < nchildren; i++) kill(children[i], sig);
}

static void usage(void) {
  fprintf(stderr,
          "usage: memtarget --mib N [--pattern random|text|zero] [--threads T] [--procs P] "
          "--ready FILE\n");
  exit(2);
}

int main(int argc, char **argv) {
  unsigned long mib = 0, threads = 0, procs = 1;
  enum pattern pat = PAT_RANDOM;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--mib")) mib = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--threads")) threads = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--procs")) procs = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--ready")) ready_path = v;
    else if (!strcmp(a, "--pattern")) {
      if (!strcmp(v, "random")) pat = PAT_RANDOM;
      else if (!strcmp(v, "text")) pat = PAT_TEXT;
      else if (!strcmp(v, "zero")) pat = PAT_ZERO;
      else usage();
    } else usage();
  }
  if (!ready_path || mib == 0 || procs < 1 || procs > MAX_PROCS || mib < procs) usage();
  if (strlen(ready_path) > 3900) usage();

  /* SIGUSR1/2 go to the main thread only: blocked while the other threads are created. */
  if (pipe2(sigpipe_fd, O_CLOEXEC | O_NONBLOCK) != 0) die("pipe2");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  sigset_t usr, old;
  sigemptyset(&usr);
  sigaddset(&usr, SIGUSR1);
  sigaddset(&usr, SIGUSR2);
  sigprocmask(SIG_BLOCK, &usr, &old);

  /* The tree: the root forks P-1 children; each tells the root it is ready over a pipe that
   * is closed again before the root writes FILE. */
  int readyp[2];
  if (pipe2(readyp, O_CLOEXEC) != 0) die("pipe2");
  my_mib = mib / procs;
  for (unsigned long c = 1; c < procs; c++) {
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
      is_root = 0;
      nchildren = 0;
      break;
    }
    children[nchildren++] = p;
  }
  if (is_root) my_mib = mib - (procs - 1) * (mib / procs);

  mem_bytes = my_mib << 20;
  mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  fill(pat, 0x853c49e6748fea9bULL ^ ((uint64_t)getpid() << 20) ^ (uint64_t)now_ns());
  checksum0 = compute_checksum();

  pthread_t t;
  if (pthread_create(&t, NULL, ticker, NULL) != 0) die("pthread_create");
  for (unsigned long i = 0; i < threads; i++)
    if (pthread_create(&t, NULL, idler, NULL) != 0) die("pthread_create");
  sigprocmask(SIG_SETMASK, &old, NULL);

  if (!is_root) {
    char c = 1;
    if (write(readyp[1], &c, 1) != 1) die("write ready pipe");
    close(readyp[0]);
    close(readyp[1]);
  } else {
    close(readyp[1]);
    for (int i = 0; i < nchildren; i++) {
      char c;
      if (read(readyp[0], &c, 1) != 1) {
        fprintf(stderr, "memtarget: a child died during setup\n");
        forward(SIGKILL);
        return 1;
      }
    }
    close(readyp[0]);
    char text[64 + MAX_PROCS * 12];
    int n = snprintf(text, sizeof text, "%d\npids %d", (int)getpid(), (int)getpid());
    for (int i = 0; i < nchildren; i++)
      n += snprintf(text + n, sizeof text - (size_t)n, " %d", (int)children[i]);
    snprintf(text + n, sizeof text - (size_t)n, "\n");
    write_atomic(ready_path, text);
  }

  for (;;) {
    struct pollfd pfd = {sigpipe_fd[0], POLLIN, 0};
    int r = poll(&pfd, 1, 1000); /* the timeout also covers a lost wake-up */
    if (r < 0 && errno != EINTR) die("poll");
    char buf[64];
    while (read(sigpipe_fd[0], buf, sizeof buf) > 0) {
    }
    if (want_reset) {
      want_reset = 0;
      if (is_root) forward(SIGUSR1);
      atomic_store(&max_gap_ns, 0);
      atomic_store(&last_tick_ns, now_ns());
    }
    if (want_report) {
      want_report = 0;
      if (is_root) forward(SIGUSR2);
      do_report();
    }
    if (is_root) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    }
  }
}
