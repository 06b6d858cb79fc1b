/*
 * consumer - the last stage of a pipeline: check the stream 1..N and record it in a file.
 *
 *   consumer OUTFILE DELAY_US READY_AFTER
 *
 * Reads lines from standard input. Each line is either "x" (straight from producer.c) or
 * "x y" (from filter.c), where the x are 1, 2, 3, ... with no gap and no repeat and y must
 * be x*x. Each line is appended as it came to OUTFILE (opened once, O_WRONLY|O_CREAT|
 * O_TRUNC|O_APPEND, and kept open; one write() per line), then the consumer sleeps
 * DELAY_US microseconds. After READY_AFTER lines it says "ready" ($CRKIT_READY, see
 * example_protocol.h; line 1 is the CONSUMER's pid, not that of the pipeline's root).
 *
 * At end of input it checks that it saw at least one line, and that OUTFILE grew by exactly
 * the bytes it wrote (so a restart that did not truncate the file back to its
 * checkpoint-time size, or that lost or repeated a write, is caught), then appends
 * "done COUNT SUM" (COUNT lines, SUM = 1 + ... + COUNT) and exits 0. A gap, a repeat, a
 * wrong square or a malformed line makes it fail at once.
 *
 * Like filter.c it reads in tiny chunks (lines straddle read() calls; data not yet
 * consumed stays in the pipe). It opens no file after OUTFILE (ex_ready's file is written
 * and closed before anyone may checkpoint).
 *
 * Output: OUTFILE holds the input lines, then "done COUNT SUM"; exit 0.
 */
#include "example_protocol.h"

#include <stdint.h>
#include <sys/stat.h>

#define READ_CHUNK 11 /* bytes per read(): less than two "x y" lines */
#define MAX_LINE 48   /* longer input lines are an error */

/* Parse the decimal number text[0..len) into *v; 0 if it is not one (or too long). */
static int parse_u64(const char *text, size_t len, uint64_t *v) {
  if (len == 0 || len > 19) return 0;
  uint64_t r = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9') return 0;
    r = r * 10 + (uint64_t)(text[i] - '0');
  }
  *v = r;
  return 1;
}

int main(int argc, char **argv) {
  ex_prog = "consumer";
  if (argc != 4) ex_usage("OUTFILE DELAY_US READY_AFTER");
  const char *outfile = argv[1];
  const long delay_us = ex_parse_long("DELAY_US", argv[2], 0, 60000000L);
  const long ready_after = ex_parse_long("READY_AFTER", argv[3], 1, 100000000L);

  int fd = open(outfile, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) ex_fail("cannot open %s: %s", outfile, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) ex_fail("fstat %s: %s", outfile, strerror(errno));
  const int regular = S_ISREG(st.st_mode);
  const off_t start_size = regular ? st.st_size : 0;

  struct ex_line_reader in = {.chunk = READ_CHUNK, .max = MAX_LINE};
  uint64_t count = 0; /* lines seen; the last x was count */
  uint64_t sum = 0;   /* sum of the x seen */
  uint64_t bytes = 0; /* bytes appended to OUTFILE */
  char *line;
  size_t have;
  while ((line = ex_next_line(&in, &have)) != NULL) {
    /* A complete line: "x" or "x y". */
    const unsigned long long lineno = (unsigned long long)count + 1;
    const char *space = memchr(line, ' ', have);
    const size_t xlen = space ? (size_t)(space - line) : have;
    uint64_t x = 0, y = 0;
    if (!parse_u64(line, xlen, &x) || (space && !parse_u64(space + 1, have - xlen - 1, &y)))
      ex_fail("input line %llu: '%.*s' is neither \"x\" nor \"x y\"", lineno, (int)have, line);
    if (x != count + 1)
      ex_fail("input line %llu: got %llu after %llu (%s)", lineno, (unsigned long long)x,
              (unsigned long long)count, x <= count ? "a repeat" : "a gap");
    if (space && (x >= ((uint64_t)1 << 32) || y != x * x))
      ex_fail("input line %llu: '%.*s': %llu is not the square of %llu", lineno, (int)have, line,
              (unsigned long long)y, (unsigned long long)x);
    count = x;
    sum += x;
    line[have++] = '\n';
    if (ex_write_all(fd, line, have) != 0)
      ex_fail("writing line %llu to %s: %s", lineno, outfile, strerror(errno));
    bytes += have;
    if (count == (uint64_t)ready_after) ex_ready(NULL);
    ex_sleep_ns((long long)delay_us * 1000LL);
  }
  if (count == 0) ex_fail("no input at all");
  const uint64_t want_sum = count * (count + 1) / 2;
  if (sum != want_sum)
    ex_fail("state mismatch: %llu lines, sum %llu, expected %llu", (unsigned long long)count,
            (unsigned long long)sum, (unsigned long long)want_sum);
  if (regular) {
    if (fstat(fd, &st) != 0) ex_fail("fstat %s: %s", outfile, strerror(errno));
    if ((uint64_t)(st.st_size - start_size) != bytes)
      ex_fail("%s has %lld bytes, but this run wrote %llu (lost or repeated output?)", outfile,
              (long long)(st.st_size - start_size), (unsigned long long)bytes);
  }
  char done[64];
  int n = snprintf(done, sizeof done, "done %llu %llu\n", (unsigned long long)count,
                   (unsigned long long)sum);
  if (ex_write_all(fd, done, (size_t)n) != 0) ex_fail("writing %s: %s", outfile, strerror(errno));
  if (close(fd) != 0) ex_fail("close %s: %s", outfile, strerror(errno));
  fprintf(stderr, "consumer: done, %llu lines\n", (unsigned long long)count);
  return 0;
}
