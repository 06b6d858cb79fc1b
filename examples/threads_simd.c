/*
 * threads_simd - 4 pthreads doing floating-point and SIMD work in lock-step rounds.
 *
 *   threads_simd OUTFILE SECONDS
 *
 * Each worker thread iterates chaotic maps (the logistic map x' = r*x*(1-x)) on two
 * 4-lane double vectors (GCC vector extensions, 32 bytes: AVX ymm registers when built
 * with -mavx, SSE xmm pairs otherwise) and on an x87 long double, with the values kept in
 * registers across the inner loop. Each worker runs in its own rounding mode
 * (nearest/up/down/toward zero: per-thread MXCSR and x87 control word). Because the maps
 * are chaotic, any register, FPU-control or memory value that is not restored exactly
 * after a restart changes the final checksum.
 *
 * The workers meet at a barrier built from a mutex and a condition variable after each of
 * a FIXED number of rounds (ROUNDS); the barrier folds every worker's contribution, in
 * thread order, into a hash that seeds the next round. The main thread waits on a second
 * condition variable. SECONDS only paces the run with short nanosleeps between rounds so
 * that it lasts about that long; it does not change the result: the checksum is the same
 * for every SECONDS, for an uninterrupted run and for a checkpointed and restarted run.
 *
 * Before it writes the result it checks its own state: every thread still has its
 * rounding mode (x87 and MXCSR), its thread id (gettid) and the process id are unchanged,
 * all values are finite and every round ran.
 *
 * Output: "checksum <16 hex digits>\n" in OUTFILE; exit 0.
 */
#include "example_protocol.h"

#include <fenv.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>

#define NTHREADS 4
#define ROUNDS 240
#define INNER 1000000 /* vector iterations per thread and round */

typedef double v4d __attribute__((vector_size(32)));
typedef long long v4i __attribute__((vector_size(32)));

static const int kModes[NTHREADS] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
static const char *const kModeNames[NTHREADS] = {"nearest", "upward", "downward", "towardzero"};

struct team {
  pthread_mutex_t mu;
  pthread_cond_t round_cv; /* barrier: waiting for the last worker of a round */
  pthread_cond_t main_cv;  /* main thread: workers started / finished */
  int arrived;
  unsigned generation;
  int started;
  int finished;
  uint64_t contrib[NTHREADS]; /* this round's contributions, as bit patterns */
  uint64_t hash;              /* running hash over all rounds */
  double seed;                /* derived from hash, read by every worker next round */
  long rounds_done;
};

struct worker {
  pthread_t thread;
  int id;
  long tid_start;
  long tid_end;
  int mode_ok;
  char mode_err[160];
  int finite;
  v4d a, b;
  long double x;
};

static struct team team = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .round_cv = PTHREAD_COND_INITIALIZER,
    .main_cv = PTHREAD_COND_INITIALIZER,
    .hash = 0xcbf29ce484222325ULL,
    .seed = 0.5,
};
static struct worker workers[NTHREADS];
static long long pace_ns; /* sleep per round */

static uint64_t fnv_bytes(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static uint64_t bits_of(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static void check_pthread(int rc, const char *what) {
  if (rc != 0) ex_fail("%s: %s", what, strerror(rc));
}

/*
 * The barrier: store this worker's contribution; the last one to arrive folds all
 * contributions (in thread order, so the result does not depend on arrival order) into
 * the hash and derives the next seed with exact integer-to-double arithmetic (so it does
 * not depend on the rounding mode of whichever thread arrives last).
 */
static double barrier(int id, uint64_t contribution) {
  check_pthread(pthread_mutex_lock(&team.mu), "pthread_mutex_lock");
  team.contrib[id] = contribution;
  if (++team.arrived == NTHREADS) {
    team.hash = fnv_bytes(team.hash, team.contrib, sizeof team.contrib);
    /* 2^52 + 52 hash bits is an exact double; times 2^-53 gives [0.5, 1) - no rounding */
    team.seed = (double)((1ULL << 52) | (team.hash >> 12)) * 0x1p-53 - 0.25; /* [0.25, 0.75) */
    team.arrived = 0;
    team.generation++;
    team.rounds_done++;
    check_pthread(pthread_cond_broadcast(&team.round_cv), "pthread_cond_broadcast");
  } else {
    unsigned gen = team.generation;
    while (gen == team.generation)
      check_pthread(pthread_cond_wait(&team.round_cv, &team.mu), "pthread_cond_wait");
  }
  double seed = team.seed;
  check_pthread(pthread_mutex_unlock(&team.mu), "pthread_mutex_unlock");
  return seed;
}

/* Iterate the maps INNER times; a, b stay in vector registers for the whole loop. */
static void __attribute__((noinline)) work(v4d *pa, v4d *pb, long double *px, double seed) {
  const v4d r1 = {3.91, 3.93, 3.97, 3.99};
  const v4d r2 = {3.89, 3.95, 3.87, 3.98};
  const v4d one = {1.0, 1.0, 1.0, 1.0};
  const v4d half = {0.5, 0.5, 0.5, 0.5};
  const v4d s = {seed, seed * 0.5, seed * 0.25, seed * 0.125};
  v4d a = *pa * half + s * half; /* stays inside (0, 1) */
  v4d b = *pb;
  long double x = *px;
  for (int k = 0; k < INNER; k++) {
    a = r1 * a * (one - a);
    b = r2 * b * (one - b);
    if ((k & 1023) == 1023) {
      /* swap lanes 1 and 3 between a and b (a permutation: no lane is lost) */
      v4d t = __builtin_shuffle(a, b, (v4i){0, 5, 2, 7});
      b = __builtin_shuffle(a, b, (v4i){4, 1, 6, 3});
      a = t;
      x = 3.9L * x * (1.0L - x);
    }
  }
  *pa = a;
  *pb = b;
  *px = x;
}

static void *worker_main(void *arg) {
  struct worker *w = (struct worker *)arg;
  if (fesetround(kModes[w->id]) != 0) ex_fail("fesetround(%s) failed", kModeNames[w->id]);
  w->tid_start = (long)syscall(SYS_gettid);
  v4d a = {0.11 + 0.01 * w->id, 0.23, 0.37, 0.41};
  v4d b = {0.53, 0.67 - 0.01 * w->id, 0.71, 0.83};
  long double x = 0.3L + 0.1L * w->id;

  check_pthread(pthread_mutex_lock(&team.mu), "pthread_mutex_lock");
  team.started++;
  check_pthread(pthread_cond_signal(&team.main_cv), "pthread_cond_signal");
  check_pthread(pthread_mutex_unlock(&team.mu), "pthread_mutex_unlock");

  double seed = 0.5;
  for (int round = 0; round < ROUNDS; round++) {
    work(&a, &b, &x, seed);
    double sum = (a[0] + a[1]) * (a[2] + a[3]) + (b[0] - b[1]) * (b[2] - b[3]) + (double)x;
    seed = barrier(w->id, bits_of(sum));
    ex_sleep_ns(pace_ns);
  }

  /* Self-checks in this thread's own context. */
  int x87 = fegetround();
  unsigned mxcsr = __builtin_ia32_stmxcsr();
  int mxcsr_mode = (int)((mxcsr >> 13) & 3u) << 10; /* MXCSR.RC -> FE_* value */
  w->mode_ok = (x87 == kModes[w->id] && mxcsr_mode == kModes[w->id]);
  if (!w->mode_ok)
    snprintf(w->mode_err, sizeof w->mode_err,
             "thread %d: rounding mode changed: expected %s (0x%x), x87 0x%x, mxcsr 0x%x", w->id,
             kModeNames[w->id], (unsigned)kModes[w->id], (unsigned)x87, mxcsr);
  w->tid_end = (long)syscall(SYS_gettid);
  w->finite = 1;
  for (int i = 0; i < 4; i++)
    if (!isfinite(a[i]) || !isfinite(b[i])) w->finite = 0;
  if (!isfinite(x)) w->finite = 0;
  w->a = a;
  w->b = b;
  w->x = x;

  check_pthread(pthread_mutex_lock(&team.mu), "pthread_mutex_lock");
  team.finished++;
  check_pthread(pthread_cond_signal(&team.main_cv), "pthread_cond_signal");
  check_pthread(pthread_mutex_unlock(&team.mu), "pthread_mutex_unlock");
  return NULL;
}

int main(int argc, char **argv) {
  ex_prog = "threads_simd";
  if (argc != 3) ex_usage("OUTFILE SECONDS");
  const char *outfile = argv[1];
  const long seconds = ex_parse_long("SECONDS", argv[2], 0, 3600);
  ex_write_file(outfile, ""); /* fail early if OUTFILE cannot be written */
  pace_ns = seconds * 1000000000LL / ROUNDS;
  const long pid_start = (long)getpid();

  for (int i = 0; i < NTHREADS; i++) {
    workers[i].id = i;
    check_pthread(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]),
                  "pthread_create");
  }

  check_pthread(pthread_mutex_lock(&team.mu), "pthread_mutex_lock");
  while (team.started < NTHREADS)
    check_pthread(pthread_cond_wait(&team.main_cv, &team.mu), "pthread_cond_wait");
  check_pthread(pthread_mutex_unlock(&team.mu), "pthread_mutex_unlock");

  ex_ready(NULL);

  check_pthread(pthread_mutex_lock(&team.mu), "pthread_mutex_lock");
  while (team.finished < NTHREADS)
    check_pthread(pthread_cond_wait(&team.main_cv, &team.mu), "pthread_cond_wait");
  check_pthread(pthread_mutex_unlock(&team.mu), "pthread_mutex_unlock");

  for (int i = 0; i < NTHREADS; i++) check_pthread(pthread_join(workers[i].thread, NULL), "pthread_join");

  if ((long)getpid() != pid_start) ex_fail("getpid() changed from %ld to %ld", pid_start, (long)getpid());
  if (team.rounds_done != ROUNDS) ex_fail("ran %ld rounds, expected %d", team.rounds_done, ROUNDS);
  uint64_t h = team.hash;
  for (int i = 0; i < NTHREADS; i++) {
    struct worker *w = &workers[i];
    if (!w->mode_ok) ex_fail("%s", w->mode_err);
    if (w->tid_start != w->tid_end)
      ex_fail("thread %d: gettid() changed from %ld to %ld", i, w->tid_start, w->tid_end);
    if (!w->finite) ex_fail("thread %d: non-finite values", i);
    for (int k = 0; k < 4; k++) {
      h = fnv_bytes(h, &(uint64_t){bits_of(w->a[k])}, 8);
      h = fnv_bytes(h, &(uint64_t){bits_of(w->b[k])}, 8);
    }
    h = fnv_bytes(h, &w->x, 10); /* the 80 significant bits of the x87 value */
  }

  char line[64];
  snprintf(line, sizeof line, "checksum %016llx\n", (unsigned long long)h);
  ex_write_file(outfile, line);
  fprintf(stderr, "threads_simd: done, %s", line);
  return 0;
}
