/*
 * vfork_parent - a process that cannot be frozen for a while: it sits in vfork() (an
 * uninterruptible wait) until its child exits after SECONDS.
 *
 *   vfork_parent OUTFILE SECONDS
 *
 * Becomes ready ($CRKIT_READY, see example_protocol.h) just before vfork(); writes
 * "done" to OUTFILE once the child has exited. Used to check that cr_checkpoint -t gives up
 * on it in time and leaves it unharmed.
 */
#include "example_protocol.h"

#include <sys/wait.h>

int main(int argc, char **argv) {
  ex_prog = "vfork_parent";
  if (argc != 3) ex_usage("OUTFILE SECONDS");
  long seconds = ex_parse_long("SECONDS", argv[2], 1, 3600);
  FILE *out = fopen(argv[1], "w");
  if (!out) ex_fail("cannot open %s: %s", argv[1], strerror(errno));
  ex_ready(NULL);
  pid_t c = vfork();
  if (c == 0) {
    sleep((unsigned)seconds);
    _exit(0);
  }
  if (c < 0) ex_fail("vfork: %s", strerror(errno));
  if (waitpid(c, NULL, 0) != c) ex_fail("waitpid: %s", strerror(errno));
  fprintf(out, "done\n");
  return fclose(out) == 0 ? 0 : 1;
}
