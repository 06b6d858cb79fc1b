/*
 * counter - append increasing numbers to a file, one every INTERVAL_MS.
 *
 *   counter OUTFILE COUNT INTERVAL_MS
 *
 * Writes "1\n", "2\n", ... "COUNT\n" to OUTFILE (opened once, O_WRONLY|O_CREAT|O_TRUNC|
 * O_APPEND, and kept open; OUTFILE "-" means standard output), sleeping INTERVAL_MS
 * between numbers. It is ready to be checkpointed ($CRKIT_READY, see example_protocol.h)
 * right after the first number. It runs about COUNT * INTERVAL_MS milliseconds.
 *
 * The output after a checkpoint with --kill and a restart must be exactly 1..COUNT: no
 * gap, no repeat. This relies on BLCR's rule that files open for writing are truncated
 * back to their checkpoint-time size at restart. At the end the program checks its own
 * state: the numbers it wrote add up, and (for a regular OUTFILE) the file's size is
 * exactly the bytes it wrote - so a restart that did not truncate the file, or that lost
 * or repeated a write, makes it fail.
 *
 * Output: OUTFILE holds the lines 1..COUNT (no extra result line); exit 0.
 */
#include "example_protocol.h"

#include <stdint.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
  ex_prog = "counter";
  if (argc != 4) ex_usage("OUTFILE COUNT INTERVAL_MS");
  const char *outfile = argv[1];
  const long count = ex_parse_long("COUNT", argv[2], 1, 100000000L);
  const long interval_ms = ex_parse_long("INTERVAL_MS", argv[3], 0, 3600000L);

  int fd = STDOUT_FILENO;
  if (strcmp(outfile, "-") != 0) {
    fd = open(outfile, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) ex_fail("cannot open %s: %s", outfile, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) ex_fail("fstat %s: %s", outfile, strerror(errno));
  const int regular = S_ISREG(st.st_mode);
  const off_t start_size = regular ? st.st_size : 0;

  uint64_t sum = 0;           /* sum of the numbers written so far */
  uint64_t bytes = 0;         /* bytes written so far */
  long last = 0;              /* last number written */
  for (long i = 1; i <= count; i++) {
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", i);
    if (ex_write_all(fd, line, (size_t)n) != 0) ex_fail("write %s: %s", outfile, strerror(errno));
    sum += (uint64_t)i;
    bytes += (uint64_t)n;
    last = i;
    if (i == 1) ex_ready(NULL);
    if (i < count) ex_sleep_ms(interval_ms);
  }

  const uint64_t want_sum = (uint64_t)count * (uint64_t)(count + 1) / 2;
  if (last != count || sum != want_sum)
    ex_fail("state mismatch: last=%ld count=%ld sum=%llu expected %llu", last, count,
            (unsigned long long)sum, (unsigned long long)want_sum);
  if (regular) {
    if (fstat(fd, &st) != 0) ex_fail("fstat %s: %s", outfile, strerror(errno));
    if ((uint64_t)(st.st_size - start_size) != bytes)
      ex_fail("%s has %lld bytes, but this run wrote %llu (lost or repeated output?)", outfile,
              (long long)(st.st_size - start_size), (unsigned long long)bytes);
  }
  if (fd != STDOUT_FILENO && close(fd) != 0) ex_fail("close %s: %s", outfile, strerror(errno));
  fprintf(stderr, "counter: done, wrote 1..%ld\n", count);
  return 0;
}
