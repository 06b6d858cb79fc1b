/*
 * generations - memory that changes all the time, in lock-step generations, and checks at
 * every step that it is one consistent moment. The target of the copy-on-write checkpoint
 * test: a snapshot taken at any moment must restart and pass every check; a torn snapshot
 * (some pages older than others, or registers of one moment and memory of a later one) fails.
 *
 *   generations OUTFILE MEGABYTES THREADS PASSES [TEXT_MEGABYTES [ZERO_MEGABYTES]]
 *
 * Regions rewritten in every pass, each split into THREADS slices (one per thread):
 *   array   MEGABYTES MiB, MAP_PRIVATE|MAP_ANONYMOUS;
 *   shared  MEGABYTES/16 MiB (at least 256 KiB), MAP_SHARED|MAP_ANONYMOUS (fork() does not
 *           copy it: the child sees the parent's later writes);
 *   wipe    the same size, private, MADV_WIPEONFORK (a fork()ed child sees zeros);
 *   nofork  the same size, private, MADV_DONTFORK (a fork()ed child has no such mapping).
 * Generation g means: every 8-byte word of every region holds the value g. The main thread
 * fills generation 1, then THREADS threads run PASSES passes: in pass p (generation
 * g = p + 1) each thread goes over its slices page by page, checks that every word of the
 * page holds g - 1 (else "FAIL: ... torn memory", exit 1) and then writes g into it; then
 * all threads meet at a barrier. They run as fast as they can, without sleeping.
 *
 * Optional constant regions, for the compression tests:
 *   text    TEXT_MEGABYTES MiB of pseudo-random English-like text (fixed seed): compresses
 *           like text; its hash is taken at the start and checked at the end;
 *   zero    ZERO_MEGABYTES MiB of resident pages that hold only zeros (each page was
 *           written, then cleared): a checkpointer may skip them; checked at the end.
 *
 * Ready ($CRKIT_READY, see example_protocol.h; line 1 = the pid) once every thread has done
 * its first pass; extra lines "threads N" and "tid0 TID" ... The main thread then waits in
 * pthread_join(). At the end it checks that every word of every region holds PASSES + 1,
 * the text hash and the zeros, and writes to OUTFILE (created empty at the start, opened
 * again only at the end):
 *   "ok passes PASSES array MEGABYTES threads THREADS text TEXT_MEGABYTES HASH zero ZERO_MEGABYTES\n"
 * (HASH: 16 hex digits, 0 without text), which depends only on the arguments. Timing goes to stderr only.
 */
#include "example_protocol.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

#define PAGE 4096UL
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))
#define MAX_THREADS 16
#define NREGIONS 4

struct region {
  const char *name;
  uint64_t *base;
  size_t words; /* a multiple of WORDS_PER_PAGE */
};

static struct region regions[NREGIONS];
static int nthreads;
static long passes;
static pthread_barrier_t barrier;
static _Atomic long threads_done_first; /* threads that have finished pass 1 */
static _Atomic long tids[MAX_THREADS];

/* The words [*from, *to) of region r that thread t owns (page-aligned slices). */
static void slice(const struct region *r, int t, size_t *from, size_t *to) {
  const size_t pages = r->words / WORDS_PER_PAGE;
  *from = pages * (size_t)t / (size_t)nthreads * WORDS_PER_PAGE;
  *to = pages * (size_t)(t + 1) / (size_t)nthreads * WORDS_PER_PAGE;
}

static void torn(const struct region *r, size_t i, uint64_t got, uint64_t want) __attribute__((noreturn));
static void torn(const struct region *r, size_t i, uint64_t got, uint64_t want) {
  const char *how = got == 0 ? "zero: the region's content was lost"
                    : got > want ? "newer than expected"
                                 : "older than expected";
  ex_fail("torn memory: %s word %zu (page %zu, address %p) holds generation %llu, expected %llu "
          "(%s)",
          r->name, i, i / WORDS_PER_PAGE, (void *)&r->base[i], (unsigned long long)got,
          (unsigned long long)want, how);
}

/* Check that every word of [from, to) holds g - 1 and write g, page by page. */
static void pass_slice(const struct region *r, size_t from, size_t to, uint64_t g) {
  const uint64_t prev = g - 1;
  for (size_t p = from; p < to; p += WORDS_PER_PAGE) {
    uint64_t *w = r->base + p;
    uint64_t diff = 0;
    for (size_t i = 0; i < WORDS_PER_PAGE; i++) diff |= w[i] ^ prev;
    if (diff != 0) {
      for (size_t i = 0; i < WORDS_PER_PAGE; i++)
        if (w[i] != prev) torn(r, p + i, w[i], prev);
    }
    for (size_t i = 0; i < WORDS_PER_PAGE; i++) w[i] = g;
  }
}

static void barrier_wait(void) {
  int rc = pthread_barrier_wait(&barrier);
  if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD) ex_fail("pthread_barrier_wait: %s", strerror(rc));
}

static void *writer(void *arg) {
  const int t = (int)(intptr_t)arg;
  atomic_store(&tids[t], (long)syscall(SYS_gettid));
  size_t from[NREGIONS], to[NREGIONS];
  for (int k = 0; k < NREGIONS; k++) slice(&regions[k], t, &from[k], &to[k]);
  for (long p = 1; p <= passes; p++) {
    const uint64_t g = (uint64_t)p + 1;
    for (int k = 0; k < NREGIONS; k++) pass_slice(&regions[k], from[k], to[k], g);
    barrier_wait();
    if (p == 1) atomic_fetch_add(&threads_done_first, 1);
  }
  return NULL;
}

static uint64_t *map_region(size_t bytes, int flags, int advice, const char *name) {
  void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) ex_fail("mmap %s (%zu bytes): %s", name, bytes, strerror(errno));
  if (advice >= 0 && madvise(m, bytes, advice) != 0)
    ex_fail("madvise %s: %s", name, strerror(errno));
  return m;
}

static uint64_t xorshift64(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t hash_bytes(const unsigned char *b, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

/* Pseudo-English: words from a small dictionary, sentences, lines. */
static void fill_text(unsigned char *b, size_t n) {
  static const char *const dict[] = {
      "the",        "memory",   "of",      "a",         "process",  "is",      "saved",
      "into",       "one",      "image",   "file",      "and",      "restarted", "later",
      "so",         "that",     "it",      "continues", "exactly",  "where",   "was",
      "checkpoint", "restart",  "thread",  "register",  "signal",   "page",    "with",
      "every",      "kernel",   "pipe",    "session",   "group",    "parent",  "child",
      "copy",       "on",       "write",   "snapshot",  "frozen",   "running", "while",
      "compressed", "batch",    "in",      "parallel",  "zero",     "pages",   "are",
      "skipped",    "data",     "from",    "stock",     "linux",    "tools",   "for",
      "consistent", "moment",   "whole",   "job",       "time",     "after",   "before",
      "its"};
  const size_t ndict = sizeof dict / sizeof dict[0];
  uint64_t s = 0x2545F4914F6CDD1DULL;
  size_t i = 0, col = 0;
  int start = 1;
  while (i < n) {
    const uint64_t r = xorshift64(&s);
    const char *w = dict[r % ndict];
    size_t len = strlen(w);
    for (size_t k = 0; k < len && i < n; k++, i++, col++)
      b[i] = (unsigned char)(start && k == 0 ? w[k] - 'a' + 'A' : w[k]);
    start = 0;
    if (i >= n) break;
    if ((r >> 20) % 11 == 0) {
      b[i++] = '.';
      col++;
      start = 1;
      if (i >= n) break;
    }
    if (col > 72) {
      b[i++] = '\n';
      col = 0;
    } else {
      b[i++] = ' ';
      col++;
    }
  }
}

int main(int argc, char **argv) {
  ex_prog = "generations";
  if (argc < 5 || argc > 7) ex_usage("OUTFILE MEGABYTES THREADS PASSES [TEXT_MEGABYTES [ZERO_MEGABYTES]]");
  const char *outfile = argv[1];
  const long mb = ex_parse_long("MEGABYTES", argv[2], 1, 1L << 16);
  nthreads = (int)ex_parse_long("THREADS", argv[3], 1, MAX_THREADS);
  passes = ex_parse_long("PASSES", argv[4], 1, 1000000000L);
  const long text_mb = argc > 5 ? ex_parse_long("TEXT_MEGABYTES", argv[5], 0, 1L << 16) : 0;
  const long zero_mb = argc > 6 ? ex_parse_long("ZERO_MEGABYTES", argv[6], 0, 1L << 16) : 0;

  ex_write_file(outfile, ""); /* fail early if OUTFILE cannot be written */

  const size_t array_bytes = (size_t)mb << 20;
  size_t side_bytes = array_bytes / 16;
  if (side_bytes < 256 * 1024) side_bytes = 256 * 1024;
  regions[0] = (struct region){"array", map_region(array_bytes, MAP_PRIVATE, -1, "array"),
                               array_bytes / sizeof(uint64_t)};
  regions[1] = (struct region){"shared", map_region(side_bytes, MAP_SHARED, -1, "shared"),
                               side_bytes / sizeof(uint64_t)};
  regions[2] = (struct region){"wipeonfork",
                               map_region(side_bytes, MAP_PRIVATE, MADV_WIPEONFORK, "wipeonfork"),
                               side_bytes / sizeof(uint64_t)};
  regions[3] = (struct region){"dontfork",
                               map_region(side_bytes, MAP_PRIVATE, MADV_DONTFORK, "dontfork"),
                               side_bytes / sizeof(uint64_t)};
  for (int k = 0; k < NREGIONS; k++)
    for (size_t i = 0; i < regions[k].words; i++) regions[k].base[i] = 1; /* generation 1 */

  const size_t text_bytes = (size_t)text_mb << 20;
  unsigned char *text = NULL;
  uint64_t text_hash = 0;
  if (text_bytes > 0) {
    text = (unsigned char *)map_region(text_bytes, MAP_PRIVATE, -1, "text");
    fill_text(text, text_bytes);
    text_hash = hash_bytes(text, text_bytes);
  }
  const size_t zero_bytes = (size_t)zero_mb << 20;
  unsigned char *zero = NULL;
  if (zero_bytes > 0) {
    zero = (unsigned char *)map_region(zero_bytes, MAP_PRIVATE, -1, "zero");
    for (size_t off = 0; off < zero_bytes; off += PAGE) {
      ((volatile unsigned char *)zero)[off + (off / PAGE) % PAGE] = 0xA5; /* make it resident */
      ((volatile unsigned char *)zero)[off + (off / PAGE) % PAGE] = 0;
    }
  }

  int rc = pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
  if (rc != 0) ex_fail("pthread_barrier_init: %s", strerror(rc));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_t th[MAX_THREADS];
  for (int t = 0; t < nthreads; t++) {
    rc = pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t);
    if (rc != 0) ex_fail("pthread_create: %s", strerror(rc));
  }
  while (atomic_load(&threads_done_first) < nthreads) ex_sleep_ms(1);

  char extra[400]; /* ex_ready() takes up to ~500 bytes */
  int n = snprintf(extra, sizeof extra, "threads %d\n", nthreads);
  for (int t = 0; t < nthreads; t++)
    n += snprintf(extra + n, sizeof extra - (size_t)n, "tid%d %ld\n", t, atomic_load(&tids[t]));
  fprintf(stderr,
          "generations: %ld MiB (+ 3 x %zu KiB shared/wipeonfork/dontfork), %d threads, %ld "
          "passes, text %ld MiB, zero %ld MiB\n",
          mb, side_bytes >> 10, nthreads, passes, text_mb, zero_mb);
  ex_ready(extra);

  for (int t = 0; t < nthreads; t++) {
    rc = pthread_join(th[t], NULL);
    if (rc != 0) ex_fail("pthread_join: %s", strerror(rc));
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);

  const uint64_t last = (uint64_t)passes + 1;
  for (int k = 0; k < NREGIONS; k++)
    for (size_t i = 0; i < regions[k].words; i++)
      if (regions[k].base[i] != last) torn(&regions[k], i, regions[k].base[i], last);
  if (text_bytes > 0) {
    const uint64_t h = hash_bytes(text, text_bytes);
    if (h != text_hash)
      ex_fail("the text region changed: hash %016llx, expected %016llx", (unsigned long long)h,
              (unsigned long long)text_hash);
  }
  for (size_t i = 0; i < zero_bytes; i++)
    if (zero[i] != 0) ex_fail("the zero region holds 0x%02x at offset %zu", zero[i], i);

  char line[200];
  snprintf(line, sizeof line, "ok passes %ld array %ld threads %d text %ld %016llx zero %ld\n",
           passes, mb, nthreads, text_mb, (unsigned long long)text_hash, zero_mb);
  ex_write_file(outfile, line);
  const double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  fprintf(stderr, "generations: done, %ld passes in %.3f s (this run), %s", passes, secs, line);
  return 0;
}
