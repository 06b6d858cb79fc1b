/*
 * workers - a parent and NWORKERS forked workers that compute in lock-step through shared
 * memory and report to the parent over a pipe.
 *
 *   workers OUTFILE NWORKERS ROUNDS
 *
 * The parent opens OUTFILE, forks one child that exits at once and is NOT reaped until the
 * very end (so the tree holds a zombie while it runs), maps a MAP_SHARED|MAP_ANONYMOUS
 * region, makes a pipe (workers -> parent) and forks NWORKERS (1..8) workers.
 *
 * Round r = 1..ROUNDS, worker w: writes its value f(w, r) into its slot of the shared
 * region, publishes "slot w holds round r", waits until every worker's slot holds round r
 * (polling with 1 ms sleeps; after 60000 polls it fails: "worker v never wrote its value
 * (sharing broken?)"), combines all round-r values into g(w, r) and writes the line
 * "w r g(w,r)\n" to the pipe (one write() of < PIPE_BUF bytes, so lines never interleave),
 * then sleeps ROUND_MS. Each slot is double-buffered by round parity: a worker can be at
 * most one round ahead of the slowest reader (it cannot finish round r+1 before everybody
 * has published r+1, i.e. has finished reading round r), so it never overwrites a value
 * that is still being read.
 *
 * The parent blocks in plain read() on the pipe (deliberately: a process blocked in read()
 * on a pipe must go on reading after a restart). It checks every line against its own
 * computation of g(w, r), that no line comes twice and that the pipe ends (EOF) after
 * exactly NWORKERS*ROUNDS lines, waits for each worker (each must exit 0), then writes
 * OUTFILE: one line "round r sum" per round (sum of the workers' g(w, r), in hex), then
 * "done NWORKERS ROUNDS". Finally it waits for the zombie child: either it is reaped
 * (exit status 0) or waitpid() says ECHILD (BLCR semantics: a zombie is not saved, so after a
 * restart the parent no longer has that child); which one is reported on stderr only, so the
 * output file is the same either way.
 *
 * Ready ($CRKIT_READY, see example_protocol.h; line 1 = the parent's pid) once the parent
 * has collected round 1; extra lines "zombie PID" and "workerW PID" (W = 0..NWORKERS-1).
 * A run takes about ROUNDS * ROUND_MS milliseconds. No fd is opened after the setup.
 */
#include "example_protocol.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MAX_WORKERS 8
#define MAX_ROUNDS 100000
#define ROUND_MS 40
#define MAX_POLLS 60000 /* 1 ms each: a generous 60 s of running time */

struct slot {
  alignas(64) _Atomic long round; /* the last round whose value is in val[] */
  uint64_t val[2];                /* val[r & 1]: the value of round r */
};

struct shared {
  struct slot slot[MAX_WORKERS];
};

static uint64_t mix64(uint64_t x) { /* a fixed bijective scrambler */
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ULL;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dULL;
  x ^= x >> 33;
  return x;
}

/* What worker w contributes in round r. */
static uint64_t value_of(int w, long r) {
  return mix64(((uint64_t)(w + 1) << 32) ^ (uint64_t)r);
}

/* What worker w reports in round r: an order-dependent combination of all round-r values. */
static uint64_t combine(int w, long r, int nworkers, const uint64_t *vals) {
  uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)w ^ ((uint64_t)r << 8);
  for (int v = 0; v < nworkers; v++) h = (h ^ vals[v]) * 0x100000001b3ULL;
  return h;
}

static void worker(struct shared *sh, int w, int nworkers, long rounds, int out_fd) {
  for (long r = 1; r <= rounds; r++) {
    sh->slot[w].val[r & 1] = value_of(w, r);
    atomic_store_explicit(&sh->slot[w].round, r, memory_order_release);
    uint64_t vals[MAX_WORKERS];
    for (int v = 0; v < nworkers; v++) {
      long polls = 0;
      long at;
      while ((at = atomic_load_explicit(&sh->slot[v].round, memory_order_acquire)) < r) {
        if (++polls > MAX_POLLS)
          ex_fail("worker %d: round %ld: worker %d never wrote its value (sharing broken?)", w, r,
                  v);
        ex_sleep_ms(1);
      }
      if (at > r + 1)
        ex_fail("worker %d: round %ld: worker %d is already at round %ld (barrier broken?)", w, r,
                v, at);
      vals[v] = sh->slot[v].val[r & 1];
    }
    char line[80];
    int n = snprintf(line, sizeof line, "%d %ld %llu\n", w, r,
                     (unsigned long long)combine(w, r, nworkers, vals));
    if (ex_write_all(out_fd, line, (size_t)n) != 0)
      ex_fail("worker %d: writing to the parent: %s", w, strerror(errno));
    ex_sleep_ms(ROUND_MS);
  }
}

/* Parse "w r value" (no newline) into its parts; 0 if malformed. */
static int parse_line(const char *text, int *w, long *r, uint64_t *value) {
  char *end;
  errno = 0;
  long lw = strtol(text, &end, 10);
  if (errno || end == text || *end != ' ') return 0;
  const char *p = end + 1;
  long lr = strtol(p, &end, 10);
  if (errno || end == p || *end != ' ') return 0;
  p = end + 1;
  unsigned long long v = strtoull(p, &end, 10);
  if (errno || end == p || *end != '\0') return 0;
  if (lw < 0 || lw >= MAX_WORKERS) return 0;
  *w = (int)lw;
  *r = lr;
  *value = v;
  return 1;
}

int main(int argc, char **argv) {
  ex_prog = "workers";
  if (argc != 4) ex_usage("OUTFILE NWORKERS ROUNDS");
  const char *outfile = argv[1];
  const int nworkers = (int)ex_parse_long("NWORKERS", argv[2], 1, MAX_WORKERS);
  const long rounds = ex_parse_long("ROUNDS", argv[3], 1, MAX_ROUNDS);

  FILE *out = fopen(outfile, "w");
  if (!out) ex_fail("cannot open %s: %s", outfile, strerror(errno));

  /* The child that becomes a zombie: exits at once, reaped only at the very end. */
  pid_t zombie = fork();
  if (zombie < 0) ex_fail("fork: %s", strerror(errno));
  if (zombie == 0) _exit(0);

  struct shared *sh =
      mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) ex_fail("mmap shared: %s", strerror(errno));
  for (int w = 0; w < MAX_WORKERS; w++) atomic_init(&sh->slot[w].round, 0);

  /* Bookkeeping of the parent, allocated before any worker runs. */
  unsigned char *seen = calloc((size_t)nworkers * (size_t)(rounds + 1), 1);
  uint64_t *round_sum = calloc((size_t)rounds + 1, sizeof *round_sum);
  int *round_lines = calloc((size_t)rounds + 1, sizeof *round_lines);
  if (!seen || !round_sum || !round_lines) ex_fail("out of memory");

  int p[2];
  if (pipe(p) != 0) ex_fail("pipe: %s", strerror(errno));
  pid_t pids[MAX_WORKERS];
  for (int w = 0; w < nworkers; w++) {
    pids[w] = fork();
    if (pids[w] < 0) ex_fail("fork: %s", strerror(errno));
    if (pids[w] == 0) {
      close(p[0]);
      worker(sh, w, nworkers, rounds, p[1]);
      _exit(0);
    }
  }
  if (close(p[1]) != 0) ex_fail("close: %s", strerror(errno));

  /* Collect NWORKERS * ROUNDS lines with blocking reads. */
  const long want = (long)nworkers * rounds;
  long lines = 0;
  int ready = 0;
  char buf[256];
  char line[96];
  size_t have = 0;
  while (lines < want) {
    ssize_t got = read(p[0], buf, sizeof buf);
    if (got < 0) {
      if (errno == EINTR) continue;
      ex_fail("reading the pipe: %s", strerror(errno));
    }
    if (got == 0) ex_fail("the pipe ended after %ld of %ld lines (a worker died?)", lines, want);
    for (ssize_t i = 0; i < got; i++) {
      if (buf[i] != '\n') {
        if (have >= sizeof line - 1) ex_fail("line %ld from the workers is too long", lines + 1);
        line[have++] = buf[i];
        continue;
      }
      line[have] = '\0';
      have = 0;
      int w;
      long r;
      uint64_t value;
      if (!parse_line(line, &w, &r, &value) || w >= nworkers || r < 1 || r > rounds)
        ex_fail("malformed line from the workers: '%s'", line);
      if (seen[(size_t)w * (size_t)(rounds + 1) + (size_t)r]++)
        ex_fail("worker %d reported round %ld twice", w, r);
      uint64_t vals[MAX_WORKERS];
      for (int v = 0; v < nworkers; v++) vals[v] = value_of(v, r);
      const uint64_t expect = combine(w, r, nworkers, vals);
      if (value != expect)
        ex_fail("worker %d, round %ld: result %llu, expected %llu (shared memory corrupted?)", w, r,
                (unsigned long long)value, (unsigned long long)expect);
      round_sum[r] += value;
      round_lines[r]++;
      lines++;
      if (!ready && round_lines[1] == nworkers) {
        char extra[400];
        int n = snprintf(extra, sizeof extra, "zombie %ld\n", (long)zombie);
        for (int v = 0; v < nworkers; v++)
          n += snprintf(extra + n, sizeof extra - (size_t)n, "worker%d %ld\n", v, (long)pids[v]);
        ex_ready(extra);
        ready = 1;
      }
    }
  }
  if (have != 0) ex_fail("the workers' output ends in the middle of a line");

  for (int w = 0; w < nworkers; w++) {
    int st;
    pid_t got;
    while ((got = waitpid(pids[w], &st, 0)) < 0 && errno == EINTR) {
    }
    if (got != pids[w])
      ex_fail("waitpid worker %d (pid %ld): %s", w, (long)pids[w], strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      ex_fail("worker %d (pid %ld) ended with wait status 0x%x", w, (long)pids[w], st);
  }
  /* Every worker has exited: the pipe must be at its end now, with nothing extra in it. */
  ssize_t extra_bytes;
  while ((extra_bytes = read(p[0], buf, sizeof buf)) < 0 && errno == EINTR) {
  }
  if (extra_bytes != 0) ex_fail("the pipe holds more than %ld lines", want);

  for (long r = 1; r <= rounds; r++) {
    if (round_lines[r] != nworkers)
      ex_fail("round %ld: %d lines, expected %d", r, round_lines[r], nworkers);
    fprintf(out, "round %ld %016llx\n", r, (unsigned long long)round_sum[r]);
  }
  fprintf(out, "done %d %ld\n", nworkers, rounds);
  if (fclose(out) != 0) ex_fail("closing %s: %s", outfile, strerror(errno));

  int st;
  pid_t got;
  while ((got = waitpid(zombie, &st, 0)) < 0 && errno == EINTR) {
  }
  if (got == zombie) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      ex_fail("the zombie child %ld ended with wait status 0x%x", (long)zombie, st);
    fprintf(stderr, "workers: zombie child %ld reaped at the end (exit status 0)\n", (long)zombie);
  } else if (got < 0 && errno == ECHILD) {
    fprintf(stderr,
            "workers: zombie child %ld not found at the end (ECHILD: the zombie was not "
            "restored)\n",
            (long)zombie);
  } else {
    ex_fail("waitpid on the zombie child %ld: %s", (long)zombie, strerror(errno));
  }
  fprintf(stderr, "workers: done, %d workers x %ld rounds\n", nworkers, rounds);
  return 0;
}
