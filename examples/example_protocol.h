/*
 * example_protocol.h - the protocol shared by all crkit example programs.
 *
 * Every example is a small, deterministic program that doubles as an integration-test
 * target:
 *   1. argv gives the output file and sizes; the program does its setup;
 *   2. it creates the file named by the environment variable CRKIT_READY (if set) to say
 *      "you may checkpoint me now". Line 1 of that file is the program's PID (getpid());
 *      some programs add more "key value" lines. The file is written under a temporary
 *      name and renamed, so a reader never sees it half written;
 *   3. it works in a loop for a bounded time, during which it may be checkpointed;
 *   4. it verifies its own state and writes its final result to the output file and exits
 *      0, or prints "FAIL: <program>: <reason>" to stderr and exits 1.
 * An uninterrupted run and a checkpointed + restarted run write the same output file.
 *
 * During the work loop the programs open no transient file descriptors, so a checkpoint
 * never catches a half-done open/write/close of a helper file.
 */
#ifndef CRKIT_EXAMPLE_PROTOCOL_H
#define CRKIT_EXAMPLE_PROTOCOL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sigqueue, syscall, MAP_ANONYMOUS, ... even with -std=c11 */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *ex_prog = "example";

/* Report a failure on stderr ("FAIL: prog: reason") and exit 1. */
static inline void ex_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void ex_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: %s: ", ex_prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

/* Usage error: print usage and exit 2. */
static inline void ex_usage(const char *usage) __attribute__((noreturn));
static inline void ex_usage(const char *usage) {
  fprintf(stderr, "usage: %s %s\n", ex_prog, usage);
  exit(2);
}

/* Parse a non-negative decimal integer argument in [min, max]. */
static inline long ex_parse_long(const char *what, const char *text, long min, long max) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    ex_fail("bad %s '%s' (expected an integer in %ld..%ld)", what, text, min, max);
  return v;
}

/* Write all of buf to fd, retrying on EINTR and short writes. Returns 0 or -1 (errno). */
static inline int ex_write_all(int fd, const void *buf, size_t len) {
  const char *p = (const char *)buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Replace the file at path with text (O_TRUNC), or fail. */
static inline void ex_write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) ex_fail("cannot open %s: %s", path, strerror(errno));
  if (ex_write_all(fd, text, strlen(text)) != 0) ex_fail("cannot write %s: %s", path, strerror(errno));
  if (close(fd) != 0) ex_fail("cannot close %s: %s", path, strerror(errno));
}

/*
 * Say "you may checkpoint me now": atomically create $CRKIT_READY containing
 * "<pid>\n" followed by extra (may be NULL or "", should end with '\n'). Also logs one
 * line to stderr.
 */
static inline void ex_ready(const char *extra) {
  const char *path = getenv("CRKIT_READY");
  fprintf(stderr, "%s: ready (pid %ld)\n", ex_prog, (long)getpid());
  if (path == NULL || path[0] == '\0') return;
  char tmp[PATH_MAX + 32];
  char text[512];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  snprintf(text, sizeof text, "%ld\n%s", (long)getpid(), extra ? extra : "");
  ex_write_file(tmp, text);
  if (rename(tmp, path) != 0) ex_fail("cannot rename %s to %s: %s", tmp, path, strerror(errno));
}

/*
 * Sleep for ns nanoseconds. Robust against interruption: on EINTR (a checkpoint or a
 * signal) it sleeps the remaining time, clamped to the original request, so a bogus
 * remainder can never make it sleep longer than asked.
 */
static inline void ex_sleep_ns(long long ns) {
  if (ns <= 0) return;
  struct timespec req = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
  const struct timespec orig = req;
  struct timespec rem;
  while (nanosleep(&req, &rem) != 0) {
    if (errno != EINTR) ex_fail("nanosleep: %s", strerror(errno));
    if (rem.tv_sec < 0 || rem.tv_nsec < 0 || rem.tv_nsec >= 1000000000L ||
        rem.tv_sec > orig.tv_sec || (rem.tv_sec == orig.tv_sec && rem.tv_nsec > orig.tv_nsec))
      return;
    req = rem;
  }
}

static inline void ex_sleep_ms(long ms) { ex_sleep_ns((long long)ms * 1000000LL); }

/*
 * Standard input, line by line, read in chunks of `chunk` bytes (<= 64). Small chunks are on
 * purpose: lines then straddle read() calls, and what is not read yet stays in the pipe.
 * Initialise as { .chunk = N, .max = M } (M <= 62: longer lines are an error).
 */
struct ex_line_reader {
  size_t chunk;     /* bytes per read() */
  size_t max;       /* longest line allowed */
  char buf[64];     /* the chunk read last */
  size_t pos, len;  /* buf[pos, len) not used yet */
  char line[64];    /* the current line (room for a '\n' the caller may add) */
  size_t have;      /* bytes of it in line[] */
  long lineno;      /* lines returned so far */
};

/*
 * The next line without its '\n' (its length in *len), or NULL at end of input. Fails on a
 * read error, a line longer than r->max bytes, or input that ends inside a line.
 */
static inline char *ex_next_line(struct ex_line_reader *r, size_t *len) {
  r->have = 0;
  for (;;) {
    while (r->pos < r->len) {
      const char c = r->buf[r->pos++];
      if (c == '\n') {
        r->lineno++;
        *len = r->have;
        return r->line;
      }
      if (r->have >= r->max)
        ex_fail("input line %ld is longer than %zu bytes", r->lineno + 1, r->max);
      r->line[r->have++] = c;
    }
    ssize_t got = read(STDIN_FILENO, r->buf, r->chunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      ex_fail("reading stdin: %s", strerror(errno));
    }
    if (got == 0) {
      if (r->have != 0)
        ex_fail("input ends in the middle of line %ld ('%.*s')", r->lineno + 1, (int)r->have,
                r->line);
      return NULL;
    }
    r->pos = 0;
    r->len = (size_t)got;
  }
}

#endif /* CRKIT_EXAMPLE_PROTOCOL_H */
