/*
 * producer - the first stage of a pipeline: write the numbers 1..N to standard output.
 *
 *   producer N DELAY_US
 *
 * Writes "1\n", "2\n", ... "N\n" to fd 1, one write() per line, sleeping DELAY_US
 * microseconds after each line but the last, then exits 0. A failed write makes it fail
 * (signals keep their default actions: if the reader went away, SIGPIPE ends it, as it
 * would end any pipeline stage). It runs about N * DELAY_US microseconds.
 *
 * It is meant to be the upstream end of a pipe or FIFO inside a process tree that is
 * checkpointed as a whole (see filter.c and consumer.c; the consumer verifies the stream
 * and says "ready"): it does no checking of its own beyond "every write succeeded". Its
 * stdout is usually a pipe, so it never opens a file.
 *
 * Output (stdout): the lines 1..N; on stderr "producer: done, wrote 1..N".
 */
#include "example_protocol.h"

int main(int argc, char **argv) {
  ex_prog = "producer";
  if (argc != 3) ex_usage("N DELAY_US");
  const long count = ex_parse_long("N", argv[1], 1, 100000000L);
  const long delay_us = ex_parse_long("DELAY_US", argv[2], 0, 60000000L);

  for (long i = 1; i <= count; i++) {
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", i);
    if (ex_write_all(STDOUT_FILENO, line, (size_t)n) != 0)
      ex_fail("writing line %ld to stdout: %s", i, strerror(errno));
    if (i < count) ex_sleep_ns((long long)delay_us * 1000LL);
  }
  fprintf(stderr, "producer: done, wrote 1..%ld\n", count);
  return 0;
}
