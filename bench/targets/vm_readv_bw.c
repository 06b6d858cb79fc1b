/* vm_readv_bw: the machine's process_vm_readv bandwidth, one of the limits that
 * bench/compare/compare.py puts next to the dump speeds it measures.
 *
 *   vm_readv_bw [--mib N] [--passes P] [--chunk-mib C]     defaults: 1024 MiB, 5 passes, 4 MiB
 *
 * Forks a child holding N MiB of touched random memory, reads all of it with process_vm_readv
 * in C MiB pieces into one reused buffer, P times, and prints one JSON line:
 *   {"tool":"vm_readv_bw","mib":N,"chunk_mib":C,"passes":P,"gbps_median":..,"gbps_best":..,
 *    "gbps":[..per pass..]}
 * (GB/s = 1e9 bytes per second.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  unsigned long mib = 1024, passes = 5, chunk_mib = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--mib")) mib = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--passes")) passes = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--chunk-mib")) chunk_mib = strtoul(argv[i + 1], NULL, 10);
    else {
      fprintf(stderr, "usage: vm_readv_bw [--mib N] [--passes P] [--chunk-mib C]\n");
      return 2;
    }
  }
  if ((argc - 1) % 2 || mib == 0 || passes == 0 || passes > 100 || chunk_mib == 0 ||
      chunk_mib > mib) {
    fprintf(stderr, "usage: vm_readv_bw [--mib N] [--passes P] [--chunk-mib C]\n");
    return 2;
  }
  size_t bytes = mib << 20, chunk = chunk_mib << 20;

  /* Mapped before the fork so that the parent knows the child's address; the child writes it,
   * which gives the child its own pages (the parent never touches them). */
  uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  int p[2];
  if (pipe(p) != 0) {
    perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    uint64_t s = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
    for (size_t i = 0; i < bytes / 8; i++) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      mem[i] = s;
    }
    char c = 1;
    if (write(p[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(p[1]);
  char c;
  if (read(p[0], &c, 1) != 1) {
    fprintf(stderr, "vm_readv_bw: child died during setup\n");
    return 1;
  }
  munmap(mem, bytes); /* the parent's copy was never touched */

  char *buf = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  memset(buf, 0, chunk);
  double gbps[100];
  int rc = 0;
  for (unsigned long pass = 0; pass < passes && rc == 0; pass++) {
    double t0 = now_s();
    for (size_t off = 0; off < bytes; off += chunk) {
      size_t n = bytes - off < chunk ? bytes - off : chunk;
      struct iovec local = {buf, n}, remote = {(char *)mem + off, n};
      ssize_t r = process_vm_readv(child, &local, 1, &remote, 1, 0);
      if (r != (ssize_t)n) {
        fprintf(stderr, "vm_readv_bw: process_vm_readv: %s\n", r < 0 ? strerror(errno) : "short");
        rc = 1;
        break;
      }
    }
    gbps[pass] = (double)bytes / (now_s() - t0) / 1e9;
  }
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  if (rc) return rc;

  double sorted[100];
  memcpy(sorted, gbps, passes * sizeof(double));
  qsort(sorted, passes, sizeof(double), cmp_double);
  double median = passes % 2 ? sorted[passes / 2]
                             : (sorted[passes / 2 - 1] + sorted[passes / 2]) / 2;
  printf("{\"tool\":\"vm_readv_bw\",\"mib\":%lu,\"chunk_mib\":%lu,\"passes\":%lu,"
         "\"gbps_median\":%.3f,\"gbps_best\":%.3f,\"gbps\":[",
         mib, chunk_mib, passes, median, sorted[passes - 1]);
  for (unsigned long i = 0; i < passes; i++) printf("%s%.3f", i ? "," : "", gbps[i]);
  printf("]}\n");
  return 0;
}
