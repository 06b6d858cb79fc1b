/*
 * sleeper - the simplest checkpoint target: sleep for a while, then report.
 *
 *   sleeper OUTFILE SECONDS
 *
 * Becomes ready at once ($CRKIT_READY, line 1 = its PID), sleeps SECONDS in 100 ms steps
 * (a process blocked in nanosleep most of the time), checks that getpid() did not change,
 * and writes "done <SECONDS>\n" to OUTFILE (created empty at the start, written at the
 * end). Useful where a test needs a process but not its output: "PID in use", someone
 * else's process, or two copies of the same image running at once.
 */
#include "example_protocol.h"

int main(int argc, char **argv) {
  ex_prog = "sleeper";
  if (argc != 3) ex_usage("OUTFILE SECONDS");
  const char *outfile = argv[1];
  const long seconds = ex_parse_long("SECONDS", argv[2], 0, 86400);
  const long pid = (long)getpid();
  ex_write_file(outfile, ""); /* fail early if OUTFILE cannot be written */
  ex_ready(NULL);
  for (long i = 0; i < seconds * 10; i++) ex_sleep_ms(100);
  if ((long)getpid() != pid) ex_fail("getpid() changed from %ld to %ld", pid, (long)getpid());
  char line[64];
  snprintf(line, sizeof line, "done %ld\n", seconds);
  ex_write_file(outfile, line);
  return 0;
}
