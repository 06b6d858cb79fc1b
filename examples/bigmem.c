/*
 * bigmem - hold MEGABYTES of pseudo-random data in memory and verify it after a while.
 *
 *   bigmem OUTFILE MEGABYTES SECONDS
 *
 * Fills an anonymous mmap of MEGABYTES MiB with xorshift64 output (constant seed), plus a
 * small heap buffer (brk area, below malloc's mmap threshold) and a 16 MiB sparse mapping
 * in which only every 16th page is written (the others must still read as zeros: a
 * checkpointer that skips untouched pages must not invent data for them). It computes a
 * checksum, becomes ready ($CRKIT_READY; line 2 of that file is "checksum <hex>"), sleeps
 * for SECONDS in short steps, then recomputes everything and compares.
 *
 * Output: "ok <MEGABYTES> <checksum as 16 hex digits>\n" in OUTFILE; exit 0. The checksum
 * depends only on MEGABYTES, so every run with the same size prints the same line.
 */
#include "example_protocol.h"

#include <stdint.h>
#include <sys/mman.h>

#define HEAP_BYTES (64 * 1024)
#define SPARSE_BYTES (16UL * 1024 * 1024)
#define SPARSE_STRIDE (16UL * 4096)

static uint64_t xorshift64(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

static void fill(uint64_t *words, size_t n, uint64_t *state) {
  for (size_t i = 0; i < n; i++) words[i] = xorshift64(state);
}

/* Order-dependent 64-bit hash of a word array. */
static uint64_t hash_words(uint64_t h, const uint64_t *words, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= words[i];
    h *= 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return h;
}

struct state {
  uint64_t *big;
  size_t big_words;
  uint64_t *heap;
  unsigned char *sparse;
};

static uint64_t checksum(const struct state *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  h = hash_words(h, s->big, s->big_words);
  h = hash_words(h, s->heap, HEAP_BYTES / sizeof(uint64_t));
  for (size_t off = 0; off < SPARSE_BYTES; off += 4096) {
    const uint64_t *page = (const uint64_t *)(s->sparse + off);
    if (off % SPARSE_STRIDE == 0) {
      h = hash_words(h, page, 4096 / sizeof(uint64_t));
    } else {
      for (size_t i = 0; i < 4096 / sizeof(uint64_t); i++)
        if (page[i] != 0) ex_fail("untouched page at sparse+0x%zx is no longer zero", off);
    }
  }
  return h;
}

int main(int argc, char **argv) {
  ex_prog = "bigmem";
  if (argc != 4) ex_usage("OUTFILE MEGABYTES SECONDS");
  const char *outfile = argv[1];
  const long mb = ex_parse_long("MEGABYTES", argv[2], 1, 1L << 20);
  const long seconds = ex_parse_long("SECONDS", argv[3], 0, 3600);

  ex_write_file(outfile, ""); /* fail early if OUTFILE cannot be written */

  struct state s;
  size_t big_bytes = (size_t)mb << 20;
  s.big = mmap(NULL, big_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s.big == MAP_FAILED) ex_fail("mmap %ld MiB: %s", mb, strerror(errno));
  s.big_words = big_bytes / sizeof(uint64_t);
  s.heap = malloc(HEAP_BYTES);
  if (s.heap == NULL) ex_fail("malloc: out of memory");
  s.sparse = mmap(NULL, SPARSE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s.sparse == MAP_FAILED) ex_fail("mmap sparse: %s", strerror(errno));

  uint64_t rng = 0x9E3779B97F4A7C15ULL;
  fill(s.big, s.big_words, &rng);
  fill(s.heap, HEAP_BYTES / sizeof(uint64_t), &rng);
  for (size_t off = 0; off < SPARSE_BYTES; off += SPARSE_STRIDE)
    fill((uint64_t *)(s.sparse + off), 4096 / sizeof(uint64_t), &rng);

  const uint64_t before = checksum(&s);
  char extra[64];
  snprintf(extra, sizeof extra, "checksum %016llx\n", (unsigned long long)before);
  fprintf(stderr, "bigmem: %ld MiB, %s", mb, extra);
  ex_ready(extra);

  for (long i = 0; i < seconds * 10; i++) ex_sleep_ms(100);

  const uint64_t after = checksum(&s);
  if (after != before)
    ex_fail("memory changed: checksum %016llx before, %016llx after", (unsigned long long)before,
            (unsigned long long)after);
  /* The generator state lives in memory too: continuing it must give the same next value as
   * regenerating the sequence from the seed. */
  uint64_t again = 0x9E3779B97F4A7C15ULL;
  for (size_t i = 0; i < s.big_words + HEAP_BYTES / sizeof(uint64_t) +
                             (SPARSE_BYTES / SPARSE_STRIDE) * (4096 / sizeof(uint64_t));
       i++)
    xorshift64(&again);
  if (again != rng) ex_fail("generator state changed");

  char line[96];
  snprintf(line, sizeof line, "ok %ld %016llx\n", mb, (unsigned long long)after);
  ex_write_file(outfile, line);
  fprintf(stderr, "bigmem: done, %s", line);
  return 0;
}
