/*
 * filter - the middle stage of a pipeline: turn each number x into "x x*x".
 *
 *   filter DELAY_US
 *
 * Reads lines from standard input, each a decimal number x (1 <= x < 2^32), and writes
 * "x x*x\n" to standard output for each of them (one write() per line), sleeping DELAY_US
 * microseconds per line. Exits 0 at end of input.
 *
 * It reads on purpose in tiny chunks (READ_CHUNK bytes, fewer than two lines): lines
 * straddle read() calls, so the line buffer that carries a partial line from one read()
 * to the next is always in use, and the data not yet processed waits in the pipe (where a
 * checkpoint has to save it) rather than in the process's memory. A malformed line or input
 * that ends in the middle of a line makes it fail. It opens no file.
 *
 * Used with producer.c and consumer.c (the consumer verifies the whole stream). Output
 * (stdout): one "x x*x" line per input line; on stderr "filter: done, N lines".
 */
#include "example_protocol.h"

#include <stdint.h>

#define READ_CHUNK 7 /* bytes per read(): less than two lines */
#define MAX_LINE 32  /* longer input lines are an error */

/* Parse a decimal number in [1, 2^32) from text[0..len), or fail. */
static uint64_t parse_number(const char *text, size_t len, long lineno) {
  if (len == 0 || len > 10)
    ex_fail("input line %ld: '%.*s' is not a number", lineno, (int)len, text);
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9')
      ex_fail("input line %ld: '%.*s' is not a number", lineno, (int)len, text);
    v = v * 10 + (uint64_t)(text[i] - '0');
  }
  if (v == 0 || v >= ((uint64_t)1 << 32))
    ex_fail("input line %ld: %llu is out of range", lineno, (unsigned long long)v);
  return v;
}

int main(int argc, char **argv) {
  ex_prog = "filter";
  if (argc != 2) ex_usage("DELAY_US");
  const long delay_us = ex_parse_long("DELAY_US", argv[1], 0, 60000000L);

  struct ex_line_reader in = {.chunk = READ_CHUNK, .max = MAX_LINE};
  const char *line;
  size_t have;
  while ((line = ex_next_line(&in, &have)) != NULL) {
    const long lines = in.lineno;
    uint64_t x = parse_number(line, have, lines);
    char out[64];
    int n = snprintf(out, sizeof out, "%llu %llu\n", (unsigned long long)x,
                     (unsigned long long)(x * x));
    if (ex_write_all(STDOUT_FILENO, out, (size_t)n) != 0)
      ex_fail("writing line %ld to stdout: %s", lines, strerror(errno));
    ex_sleep_ns((long long)delay_us * 1000LL);
  }
  fprintf(stderr, "filter: done, %ld lines\n", in.lineno);
  return 0;
}
