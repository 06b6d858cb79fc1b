/*
 * shm_kinds - every kind of memory shared between processes, used in turns by two children.
 *
 *   shm_kinds WORKDIR ROUNDS
 *
 * The parent maps, all MAP_SHARED: an anonymous region; a memfd (its fd is also kept open);
 * a POSIX shared memory object (shm_open, /dev/shm); a regular file WORKDIR/shared.bin; and
 * a POSIX shared memory object that is removed (shm_unlink) once mapped. It then forks two
 * children, which take turns: child k waits until the turn counter in the anonymous region
 * is even (k = 0) or odd (k = 1), adds 1 to a counter in each of the other regions, then
 * passes the turn on (ROUNDS turns each, ~5 ms apart). A region that stopped being shared
 * (for instance restored as two private copies) makes the turns or the counts go wrong: a
 * child waiting more than 30 s for its turn fails ("turn never came"), and the parent checks
 * every counter.
 *
 * Ready ($CRKIT_READY, line 1 = the parent's pid) once both children have taken 10 turns.
 * At the end the parent also reads the memfd through its fd and the file through read(2):
 * both must hold the counts the mappings hold (one object, not a copy).
 *
 * Output: WORKDIR/result.txt with one line per region ("anon 2R", "memfd 2R", ...), then
 * "done"; exit 0.
 */
#include "example_protocol.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define REGION 8192

struct region {
  const char *name;
  volatile uint64_t *p;
};

static void child(struct region *r, int nr, int k, long rounds) {
  volatile uint64_t *turn = r[0].p;
  for (long i = 0; i < rounds; i++) {
    long waited = 0;
    while ((*turn & 1) != (uint64_t)k) {
      ex_sleep_ms(1);
      if (++waited > 30000) ex_fail("child %d: turn %ld never came (sharing broken?)", k, i);
    }
    for (int j = 1; j < nr; j++) r[j].p[0]++;
    ex_sleep_ms(5);
    __atomic_add_fetch(turn, 1, __ATOMIC_SEQ_CST);
  }
  _exit(0);
}

static volatile uint64_t *map_fd(int fd, const char *what) {
  if (ftruncate(fd, REGION) != 0) ex_fail("ftruncate %s: %s", what, strerror(errno));
  void *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) ex_fail("mmap %s: %s", what, strerror(errno));
  return (volatile uint64_t *)p;
}

int main(int argc, char **argv) {
  ex_prog = "shm_kinds";
  if (argc != 3) ex_usage("WORKDIR ROUNDS");
  const char *dir = argv[1];
  const long rounds = ex_parse_long("ROUNDS", argv[2], 10, 100000);
  char path[PATH_MAX], shm1[64], shm2[64];

  struct region r[5];
  void *anon = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (anon == MAP_FAILED) ex_fail("mmap anonymous: %s", strerror(errno));
  r[0] = (struct region){"anon", anon};

  int mfd = (int)syscall(SYS_memfd_create, "shm_kinds", 0);
  if (mfd < 0) ex_fail("memfd_create: %s", strerror(errno));
  r[1] = (struct region){"memfd", map_fd(mfd, "memfd")};

  snprintf(shm1, sizeof shm1, "/crkit-shm-kinds-%ld", (long)getpid());
  int s1 = shm_open(shm1, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (s1 < 0) ex_fail("shm_open %s: %s", shm1, strerror(errno));
  r[2] = (struct region){"posix-shm", map_fd(s1, shm1)};
  close(s1);

  snprintf(path, sizeof path, "%s/shared.bin", dir);
  int ffd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (ffd < 0) ex_fail("open %s: %s", path, strerror(errno));
  r[3] = (struct region){"file", map_fd(ffd, path)};

  snprintf(shm2, sizeof shm2, "/crkit-shm-kinds-gone-%ld", (long)getpid());
  int s2 = shm_open(shm2, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (s2 < 0) ex_fail("shm_open %s: %s", shm2, strerror(errno));
  r[4] = (struct region){"removed-shm", map_fd(s2, shm2)};
  close(s2);
  shm_unlink(shm2);
  const int nr = 5;

  pid_t kids[2];
  for (int k = 0; k < 2; k++) {
    kids[k] = fork();
    if (kids[k] < 0) ex_fail("fork: %s", strerror(errno));
    if (kids[k] == 0) child(r, nr, k, rounds);
  }
  while (r[0].p[0] < 20) ex_sleep_ms(2);
  ex_ready(NULL);
  for (int k = 0; k < 2; k++) {
    int st = 0;
    if (waitpid(kids[k], &st, 0) != kids[k]) ex_fail("waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ex_fail("child %d failed (status %#x)", k, st);
  }
  shm_unlink(shm1);

  char out[1024] = "";
  size_t len = 0;
  const uint64_t want = 2 * (uint64_t)rounds;
  for (int j = 0; j < nr; j++) {
    if (r[j].p[0] != want)
      ex_fail("%s: counter is %llu, expected %llu", r[j].name, (unsigned long long)r[j].p[0],
              (unsigned long long)want);
    len += (size_t)snprintf(out + len, sizeof out - len, "%s %llu\n", r[j].name,
                            (unsigned long long)r[j].p[0]);
  }
  /* The fds and the mappings are one object each. */
  uint64_t v = 0;
  if (pread(mfd, &v, sizeof v, 0) != (ssize_t)sizeof v || v != want)
    ex_fail("the memfd's fd reads %llu, its mapping holds %llu", (unsigned long long)v,
            (unsigned long long)want);
  if (pread(ffd, &v, sizeof v, 0) != (ssize_t)sizeof v || v != want)
    ex_fail("%s reads %llu, its mapping holds %llu", path, (unsigned long long)v,
            (unsigned long long)want);
  snprintf(out + len, sizeof out - len, "done\n");
  snprintf(path, sizeof path, "%s/result.txt", dir);
  ex_write_file(path, out);
  fprintf(stderr, "shm_kinds: done, %ld rounds\n", rounds);
  return 0;
}
