/* ring_halo: the acceptance workload for coordinated MPI checkpoints.
 *
 *   mpiexec -n N ring_halo ITERATIONS [SLEEP_US]        (N >= 2)
 *
 * Every iteration keeps point-to-point messages in flight for most of its duration, so a
 * checkpoint taken at a random moment finds open channels that must be drained:
 *   1. a ring pass: MPI_Isend of RING_WORDS to rank+1, MPI_Irecv from rank-1;
 *   2. a 1-D periodic halo exchange of HALO words with both neighbours, non-blocking, with
 *      the halo-independent part of the stencil computed before MPI_Waitall;
 *   3. every COLL_EVERY iterations MPI_Allreduce (uint64, SUM), MPI_Bcast and MPI_Barrier.
 * All state is uint64 mixed with wrap-around arithmetic, and the only reduction is an
 * unsigned sum (commutative and associative mod 2^64), so the result depends only on N and
 * ITERATIONS: not on timing, on the node count, on how ranks are placed, or on whether the
 * job was checkpointed and restarted in between. Rank 0 prints
 *   checksum=<16 hex digits> ranks=N iterations=M
 * to stdout, and also to $RING_HALO_OUT if set (written to $RING_HALO_OUT.tmp, then renamed,
 * so a reader never sees a half-written file). SLEEP_US (default 0) is a usleep per
 * iteration, so that a test can make the job last as long as it needs. Exit 0 on success,
 * 2 on bad arguments. */
#include <mpi.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
  RING_WORDS = 1024,  /* 8 KiB ring message: large enough to not be sent eagerly everywhere */
  LOCAL = 2048,       /* owned cells per rank */
  HALO = 384,         /* 3 KiB halo each side = stencil reach */
  COLL_EVERY = 8,     /* collectives every COLL_EVERY iterations */
  BCAST_WORDS = 16,
  TAG_RING = 1, TAG_TO_LEFT = 2, TAG_TO_RIGHT = 3, /* distinct tags: with N=2 left == right */
};

/* splitmix64 finaliser: a bijective, well-mixing function of one word. */
static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Field with ghost cells: g[0..HALO) left ghost, g[HALO..HALO+LOCAL) owned,
 * g[HALO+LOCAL..LOCAL+2*HALO) right ghost. The stencil reads i-HALO, i, i+HALO. */
static uint64_t g[LOCAL + 2 * HALO], ng[LOCAL + 2 * HALO];
static uint64_t ring_out[RING_WORDS], ring_in[RING_WORDS];
/* Separate send copies of the edges: MPI-2 forbids touching a buffer of a pending send,
 * and the stencil below reads the owned cells while the sends are in flight. */
static uint64_t left_out[HALO], right_out[HALO];

static void stencil(long it, int from, int to) {
  for (int i = from; i < to; i++)
    ng[i] = mix(g[i - HALO] + rotl(g[i], 17) + 3 * g[i + HALO] + (uint64_t)it);
}

/* Order-sensitive digest of one rank's state (sum over ranks is done by MPI). */
static uint64_t digest(void) {
  uint64_t h = 0;
  for (int i = HALO; i < HALO + LOCAL; i++) h = mix(h ^ g[i]);
  for (int j = 0; j < RING_WORDS; j++) h = mix(h + ring_out[j]);
  return h;
}

static int parse_long(const char *s, long min, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < min) return -1;
  *out = v;
  return 0;
}

static void write_result(const char *line) {
  fputs(line, stdout);
  fflush(stdout);
  const char *path = getenv("RING_HALO_OUT");
  if (!path || !*path) return;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f || fputs(line, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
    perror(path);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, n;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);

  /* Every rank sees the same argv, so all of them take the same branch here. */
  long iters, sleep_us = 0;
  if (argc < 2 || argc > 3 || parse_long(argv[1], 1, &iters) != 0 ||
      (argc == 3 && parse_long(argv[2], 0, &sleep_us) != 0) || n < 2) {
    if (rank == 0)
      fprintf(stderr, "usage: mpiexec -n N %s ITERATIONS [SLEEP_US]   (N >= 2, ITERATIONS >= 1)\n",
              argv[0]);
    MPI_Finalize();
    return 2;
  }

  const int left = (rank + n - 1) % n, right = (rank + 1) % n;
  for (int i = 0; i < LOCAL; i++) g[HALO + i] = mix((uint64_t)rank * LOCAL + (uint64_t)i + 1);
  for (int j = 0; j < RING_WORDS; j++) ring_out[j] = mix(((uint64_t)rank << 32) ^ (uint64_t)j);
  const long progress_every = iters >= 10 ? iters / 10 : 1;

  for (long it = 0; it < iters; it++) {
    MPI_Request req[6];
    MPI_Status st[6]; /* not MPI_STATUSES_IGNORE: GCC 12 -Wstringop-overflow misfires on it */
    /* (1) ring pass and (2) halo exchange, all posted before any wait so that every
     * message of this iteration is in flight at the same time. */
    MPI_Irecv(ring_in, RING_WORDS, MPI_UINT64_T, left, TAG_RING, MPI_COMM_WORLD, &req[0]);
    MPI_Irecv(g, HALO, MPI_UINT64_T, left, TAG_TO_RIGHT, MPI_COMM_WORLD, &req[1]);
    MPI_Irecv(g + HALO + LOCAL, HALO, MPI_UINT64_T, right, TAG_TO_LEFT, MPI_COMM_WORLD, &req[2]);
    memcpy(left_out, g + HALO, sizeof left_out);
    memcpy(right_out, g + LOCAL, sizeof right_out);
    MPI_Isend(ring_out, RING_WORDS, MPI_UINT64_T, right, TAG_RING, MPI_COMM_WORLD, &req[3]);
    MPI_Isend(left_out, HALO, MPI_UINT64_T, left, TAG_TO_LEFT, MPI_COMM_WORLD, &req[4]);
    MPI_Isend(right_out, HALO, MPI_UINT64_T, right, TAG_TO_RIGHT, MPI_COMM_WORLD, &req[5]);

    /* Overlap: the cells whose stencil does not reach a ghost cell, while data moves. */
    stencil(it, 2 * HALO, LOCAL);
    MPI_Waitall(6, req, st);
    stencil(it, HALO, 2 * HALO);
    stencil(it, LOCAL, LOCAL + HALO);
    memcpy(g + HALO, ng + HALO, LOCAL * sizeof g[0]);

    /* Couple the ring into the field and back, so every word depends on every rank. */
    for (int j = 0; j < RING_WORDS; j++)
      ring_out[j] = mix(ring_in[j] ^ g[HALO + (j * 7 + it) % LOCAL] ^ (uint64_t)rank);
    g[HALO + it % LOCAL] ^= ring_in[it % RING_WORDS];

    /* (3) collectives: a wrap-around global sum, then a broadcast from a rotating root. */
    if (it % COLL_EVERY == COLL_EVERY - 1) {
      uint64_t mine = digest(), sum = 0, seed[BCAST_WORDS];
      MPI_Allreduce(&mine, &sum, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
      int root = (int)((it / COLL_EVERY) % n);
      for (int k = 0; k < BCAST_WORDS; k++) seed[k] = mix(sum + ring_out[k] + (uint64_t)k);
      MPI_Bcast(seed, BCAST_WORDS, MPI_UINT64_T, root, MPI_COMM_WORLD);
      for (int k = 0; k < BCAST_WORDS; k++) g[HALO + (k * 131 + it) % LOCAL] += seed[k];
      MPI_Barrier(MPI_COMM_WORLD);
    }

    if (sleep_us > 0) usleep((useconds_t)sleep_us);  /* EINTR (a checkpoint) only shortens it */
    if (rank == 0 && ((it + 1) % progress_every == 0 || it + 1 == iters))
      fprintf(stderr, "iteration %ld/%ld\n", it + 1, iters);
  }

  /* Per-rank digests are salted with the rank, so that swapping two ranks' states would
   * change the sum; the sum itself does not depend on the order MPI adds them in. */
  uint64_t mine = mix(digest() ^ ((uint64_t)rank * UINT64_C(0x9e3779b97f4a7c15))), total = 0;
  MPI_Reduce(&mine, &total, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    char line[128];
    snprintf(line, sizeof line, "checksum=%016" PRIx64 " ranks=%d iterations=%ld\n", total, n,
             iters);
    write_result(line);
  }
  MPI_Finalize();
  return 0;
}
