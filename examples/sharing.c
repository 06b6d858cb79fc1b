/*
 * sharing - objects that are shared inside one process must stay shared after a restart.
 *
 *   sharing OUTFILE WORKDIR SECONDS
 *
 * Sets up, then becomes ready ($CRKIT_READY, see example_protocol.h):
 *   - a pipe holding 20000 bytes of data in flight, both ends open, one end O_NONBLOCK;
 *   - WORKDIR/data.bin open twice through dup(): the two fds share one offset;
 *   - an O_TMPFILE file with known content;
 *   - a memfd mapped twice (read/write and read-only): a write through one is seen
 *     through the other;
 *   - a 1 GiB MAP_SHARED|MAP_ANONYMOUS region with one page written in the middle.
 * Sleeps SECONDS, then checks each of them and writes one line:
 *   "ok pipe=20000 nonblock=ok dupoffset=ok tmpfile=ok memfd=ok sparse=ok".
 */
#include "example_protocol.h"

#include <poll.h>
#include <sys/mman.h>

#define PIPE_BYTES 20000

int main(int argc, char **argv) {
  ex_prog = "sharing";
  if (argc != 4) ex_usage("OUTFILE WORKDIR SECONDS");
  long seconds = ex_parse_long("SECONDS", argv[3], 1, 3600);
  FILE *out = fopen(argv[1], "w");
  if (!out) ex_fail("cannot open %s: %s", argv[1], strerror(errno));
  if (chdir(argv[2]) != 0) ex_fail("chdir %s: %s", argv[2], strerror(errno));

  int p[2];
  if (pipe(p) != 0) ex_fail("pipe: %s", strerror(errno));
  if (fcntl(p[0], F_SETPIPE_SZ, 65536) < 0) ex_fail("F_SETPIPE_SZ: %s", strerror(errno));
  static unsigned char pattern[PIPE_BYTES];
  for (int i = 0; i < PIPE_BYTES; ++i) pattern[i] = (unsigned char)(i * 7 + 3);
  if (ex_write_all(p[1], pattern, PIPE_BYTES) != 0) ex_fail("filling the pipe: %s", strerror(errno));
  fcntl(p[0], F_SETFL, O_NONBLOCK);

  int f = open("data.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (f < 0) ex_fail("data.bin: %s", strerror(errno));
  if (ex_write_all(f, "0123456789abcdef", 16) != 0) ex_fail("writing data.bin");
  lseek(f, 3, SEEK_SET);
  int d = dup(f);

  int t = open(".", O_TMPFILE | O_RDWR, 0600);
  if (t < 0) ex_fail("O_TMPFILE: %s", strerror(errno));
  if (ex_write_all(t, "tmpdata", 7) != 0) ex_fail("writing the tmpfile");

  int m = memfd_create("double", 0);
  if (m < 0 || ftruncate(m, 4096) != 0) ex_fail("memfd: %s", strerror(errno));
  char *rw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  char *ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, m, 0);
  if (rw == MAP_FAILED || ro == MAP_FAILED) ex_fail("mapping the memfd: %s", strerror(errno));
  close(m);
  strcpy(rw, "v1");

  size_t big_len = (size_t)1 << 30;
  char *big = mmap(NULL, big_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (big == MAP_FAILED) ex_fail("mapping 1 GiB shared: %s", strerror(errno));
  strcpy(big + big_len / 2, "deep");

  ex_ready(NULL);
  for (long i = 0; i < seconds * 20; ++i) ex_sleep_ms(50);

  /* The pipe: all data back, in order, then empty (non-blocking read end: EAGAIN). */
  static unsigned char got[PIPE_BYTES + 16];
  size_t n = 0;
  for (;;) {
    ssize_t k = read(p[0], got + n, sizeof got - n);
    if (k > 0) {
      n += (size_t)k;
      continue;
    }
    if (k < 0 && errno == EAGAIN) break;
    ex_fail("reading the pipe: %s", k < 0 ? strerror(errno) : "EOF");
  }
  if (n != PIPE_BYTES || memcmp(got, pattern, PIPE_BYTES) != 0)
    ex_fail("pipe data differs: %zu bytes back, expected %d", n, PIPE_BYTES);
  if (!(fcntl(p[0], F_GETFL) & O_NONBLOCK)) ex_fail("pipe read end lost O_NONBLOCK");
  if (ex_write_all(p[1], "x", 1) != 0) ex_fail("the pipe's write end is not connected");
  struct pollfd pf = {p[0], POLLIN, 0};
  if (poll(&pf, 1, 0) != 1) ex_fail("the pipe's ends are not connected to each other");

  lseek(f, 2, SEEK_CUR);
  if (lseek(d, 0, SEEK_CUR) != 5) ex_fail("dup'd fds do not share their offset");
  char tb[8] = {0};
  if (pread(t, tb, 7, 0) != 7 || strcmp(tb, "tmpdata") != 0) ex_fail("tmpfile content lost");
  strcpy(rw, "v2");
  if (strcmp(ro, "v2") != 0) ex_fail("the memfd's two mappings are no longer one object");
  if (strcmp(big + big_len / 2, "deep") != 0 || big[0] != 0) ex_fail("sparse shared memory content wrong");

  fprintf(out, "ok pipe=%d nonblock=ok dupoffset=ok tmpfile=ok memfd=ok sparse=ok\n", PIPE_BYTES);
  if (fclose(out) != 0) ex_fail("closing output: %s", strerror(errno));
  fprintf(stderr, "sharing: done\n");
  return 0;
}
