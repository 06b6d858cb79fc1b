/*
 * libcr_stress - critical sections against a stream of checkpoint requests, from inside and
 * from outside.
 *
 *   libcr_stress OUTFILE SECONDS IMAGE PAUSE_MS
 *
 * Two threads run for SECONDS seconds (counted from "ready"), the main thread waits:
 *   worker     (cr_init) enters and leaves critical sections in a loop; inside one it increments
 *              the counter a, yields the CPU now and then, and increments b, so a == b holds
 *              whenever no thread is inside a section. Some iterations nest a second section,
 *              some use cr_tryenter_cs() first. It has a signal-context callback.
 *   requester  (cr_init) asks for checkpoints of its own process, one after the other, a few
 *              milliseconds apart (PAUSE_MS/2 .. PAUSE_MS; PAUSE_MS 0: no requests from inside):
 *              cr_request_checkpoint(CR_SCOPE_PROC, target 0, cr_fd = IMAGE, truncated first)
 *              + cr_poll_checkpoint(). Each must succeed (> 0) or find another request in
 *              progress (EBUSY, from the request or from the poll).
 * Then the main thread stops them, the worker last (so that every checkpoint finds it).
 * A thread-context callback and the worker's signal-context callback check a == b (no
 * checkpoint inside a critical section) and count the checkpoints they took part in, by what
 * cr_checkpoint() returned. Checkpoints may also come from outside (cr_checkpoint).
 *
 * Output (OUTFILE, at the end):
 *   stress seconds=S iterations=N a=A b=B
 *   callbacks tc=N tc_ok=N tc_fail=N tc_last_fail=V sig=N sig_ok=N violations=N
 *   self requests=N ok=N busy=N errors=N last_errno=E
 *   progress max_gap_ms=N
 * (tc, sig: callback runs; *_ok: runs where cr_checkpoint() returned 0; violations: runs that
 * found a != b or a thread inside a section; max_gap_ms: the longest time between the ends of
 * two iterations of the worker, checkpoints included). The program exits 0 if a == b == N,
 * violations == 0 and errors == 0, 1 otherwise (after writing OUTFILE).
 */
#include "example_protocol.h"

#include <libcr.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

static volatile unsigned long a, b;
static volatile int worker_in_cs;
static unsigned long iterations;       /* atomic */
static int stop_requests, stop_worker; /* atomic */

static int tc_runs, tc_ok, tc_fail, tc_last_fail, sig_runs, sig_ok, violations; /* atomic */

static long self_requests, self_ok, self_busy, self_errors;
static int self_last_errno;
static int image_fd = -1;
static long pause_ms;

static void check_sections(void) {
  if (a != b || worker_in_cs) __atomic_add_fetch(&violations, 1, __ATOMIC_SEQ_CST);
}

static int tc_callback(void* arg) {
  (void)arg;
  __atomic_add_fetch(&tc_runs, 1, __ATOMIC_SEQ_CST);
  check_sections();
  int ret = cr_checkpoint(0);
  check_sections();
  if (ret == 0) {
    __atomic_add_fetch(&tc_ok, 1, __ATOMIC_SEQ_CST);
  } else {
    __atomic_add_fetch(&tc_fail, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&tc_last_fail, ret, __ATOMIC_SEQ_CST);
  }
  return 0;
}

static int sig_callback(void* arg) {
  (void)arg;
  __atomic_add_fetch(&sig_runs, 1, __ATOMIC_SEQ_CST);
  check_sections();
  int ret = cr_checkpoint(0);
  check_sections();
  if (ret == 0) __atomic_add_fetch(&sig_ok, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static volatile int worker_ready, requester_ready;
static long max_gap_us; /* the longest time between two iterations of the worker */

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void* worker_main(void* unused) {
  (void)unused;
  cr_client_id_t id = cr_init();
  if (id < 0) ex_fail("worker: cr_init: %s", cr_strerror(errno));
  if (cr_register_callback(sig_callback, NULL, CR_SIGNAL_CONTEXT) < 0)
    ex_fail("worker: cr_register_callback: %s", cr_strerror(errno));
  __atomic_store_n(&worker_ready, 1, __ATOMIC_RELEASE);
  long long last = now_us();
  for (unsigned long i = 0; !__atomic_load_n(&stop_worker, __ATOMIC_ACQUIRE); i++) {
    int r = 1;
    if (i % 8 == 3) {
      r = cr_tryenter_cs(id);
      if (r < 0) ex_fail("worker: cr_tryenter_cs: %s", cr_strerror(errno));
    }
    if (r != 0 && cr_enter_cs(id) != 0) ex_fail("worker: cr_enter_cs: %s", cr_strerror(errno));
    worker_in_cs = 1;
    a++;
    if (i % 16 == 0) sched_yield();
    if (i % 5 == 0) { /* a nested section */
      if (cr_enter_cs(id) != 0) ex_fail("worker: nested cr_enter_cs: %s", cr_strerror(errno));
      if (cr_leave_cs(id) != 0) ex_fail("worker: nested cr_leave_cs: %s", cr_strerror(errno));
    }
    b++;
    worker_in_cs = 0;
    if (cr_leave_cs(id) != 0) ex_fail("worker: cr_leave_cs: %s", cr_strerror(errno));
    __atomic_add_fetch(&iterations, 1, __ATOMIC_SEQ_CST);
    const long long t = now_us();
    if (t - last > max_gap_us) max_gap_us = (long)(t - last);
    last = t;
    if (i % 64 == 0) ex_sleep_ns(100000); /* 0.1 ms */
  }
  return NULL;
}

static void* requester_main(void* unused) {
  (void)unused;
  if (cr_init() < 0) ex_fail("requester: cr_init: %s", cr_strerror(errno));
  __atomic_store_n(&requester_ready, 1, __ATOMIC_RELEASE);
  unsigned seed = 12345;
  while (pause_ms > 0 && !__atomic_load_n(&stop_requests, __ATOMIC_ACQUIRE)) {
    if (ftruncate(image_fd, 0) != 0 || lseek(image_fd, 0, SEEK_SET) != 0)
      ex_fail("truncating the image file: %s", strerror(errno));
    cr_checkpoint_args_t args;
    if (cr_initialize_checkpoint_args_t(&args) != 0)
      ex_fail("cr_initialize_checkpoint_args_t: %s", cr_strerror(errno));
    args.cr_scope = CR_SCOPE_PROC;
    args.cr_target = 0;
    args.cr_fd = image_fd;
    cr_checkpoint_handle_t h;
    self_requests++;
    errno = 0;
    if (cr_request_checkpoint(&args, &h) != 0) {
      if (errno == EBUSY) {
        self_busy++;
      } else {
        self_errors++;
        self_last_errno = errno;
        fprintf(stderr, "libcr_stress: cr_request_checkpoint: %s\n", cr_strerror(errno));
      }
    } else {
      int r;
      do {
        errno = 0;
        r = cr_poll_checkpoint(&h, NULL);
      } while (r == CR_POLL_CHKPT_ERR_PRE && errno == EINTR);
      if (r > 0) {
        self_ok++;
      } else if (r == CR_POLL_CHKPT_ERR_POST && errno == EBUSY) {
        self_busy++;
      } else {
        self_errors++;
        self_last_errno = errno;
        fprintf(stderr, "libcr_stress: cr_poll_checkpoint returned %d: %s\n", r,
                cr_strerror(errno));
      }
    }
    seed = seed * 1103515245u + 12345u;
    ex_sleep_ms(pause_ms / 2 + (long)((seed >> 16) % (unsigned)(pause_ms / 2 + 1)));
  }
  return NULL;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  ex_prog = "libcr_stress";
  if (argc != 5) ex_usage("OUTFILE SECONDS IMAGE PAUSE_MS");
  const char* outfile = argv[1];
  const long seconds = ex_parse_long("SECONDS", argv[2], 1, 3600);
  pause_ms = ex_parse_long("PAUSE_MS", argv[4], 0, 60000);
  image_fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (image_fd < 0) ex_fail("cannot open %s: %s", argv[3], strerror(errno));

  /* cr_init in the main thread only to register the thread-context callback (it is
   * process-wide); the main thread takes no part in critical sections. */
  if (cr_init() < 0) ex_fail("cr_init: %s", cr_strerror(errno));
  if (cr_register_callback(tc_callback, NULL, CR_THREAD_CONTEXT) < 0)
    ex_fail("cr_register_callback: %s", cr_strerror(errno));
  pthread_t worker, requester;
  int e = pthread_create(&worker, NULL, worker_main, NULL);
  if (e != 0) ex_fail("pthread_create: %s", strerror(e));
  while (!__atomic_load_n(&worker_ready, __ATOMIC_ACQUIRE)) ex_sleep_ms(1);
  e = pthread_create(&requester, NULL, requester_main, NULL);
  if (e != 0) ex_fail("pthread_create: %s", strerror(e));
  while (!__atomic_load_n(&requester_ready, __ATOMIC_ACQUIRE)) ex_sleep_ms(1);
  ex_ready(NULL);

  const double t_end = now_s() + (double)seconds;
  for (double left; (left = t_end - now_s()) > 0;) ex_sleep_ns((long long)(left * 1e9) + 1000);
  /* The worker stops last: every checkpoint of the run finds it. */
  __atomic_store_n(&stop_requests, 1, __ATOMIC_RELEASE);
  e = pthread_join(requester, NULL);
  if (e != 0) ex_fail("pthread_join: %s", strerror(e));
  __atomic_store_n(&stop_worker, 1, __ATOMIC_RELEASE);
  e = pthread_join(worker, NULL);
  if (e != 0) ex_fail("pthread_join: %s", strerror(e));

  const unsigned long n = __atomic_load_n(&iterations, __ATOMIC_SEQ_CST);
  char text[2048];
  snprintf(text, sizeof text,
           "stress seconds=%ld iterations=%lu a=%lu b=%lu\n"
           "callbacks tc=%d tc_ok=%d tc_fail=%d tc_last_fail=%d sig=%d sig_ok=%d "
           "violations=%d\n"
           "self requests=%ld ok=%ld busy=%ld errors=%ld last_errno=%d\n"
           "progress max_gap_ms=%ld\n",
           seconds, n, a, b, tc_runs, tc_ok, tc_fail, tc_last_fail, sig_runs, sig_ok, violations,
           self_requests, self_ok, self_busy, self_errors, self_last_errno, max_gap_us / 1000);
  ex_write_file(outfile, text);
  if (a != n || b != n) ex_fail("counters a=%lu b=%lu, expected %lu", a, b, n);
  if (violations) ex_fail("%d callbacks ran while a critical section was held", violations);
  if (self_errors)
    ex_fail("%ld self requests failed (last: %s)", self_errors, cr_strerror(self_last_errno));
  fprintf(stderr, "libcr_stress: done, %lu iterations, %d checkpoints\n", n, tc_ok);
  return 0;
}
