/*
 * libcr_callbacks - a multithreaded libcr program: callbacks of both kinds, critical sections.
 *
 *   libcr_callbacks OUTFILE STEPS INTERVAL_MS
 *
 * The main thread and one worker thread call cr_init(). Callbacks (each registered once):
 *   thread-context: tc1, then tc2 (registered by the main thread; libcr runs them in a thread
 *                   of its own);
 *   signal-context: sm1, then sm2 in the main thread; sw1 in the worker thread.
 * Both threads do STEPS steps, INTERVAL_MS apart; each step changes the thread's state inside
 * cr_enter_cs() ... cr_leave_cs(), so no checkpoint may happen in the middle of a step.
 *
 * Every callback records an event when it starts (before it calls cr_checkpoint()) and one
 * when cr_checkpoint() has returned (before the callback returns); the events are kept in
 * memory (the callbacks run in signal handlers) and written to OUTFILE at the end:
 *   event seq=S cb=NAME phase=pre n=N tid=T status=ST in_cs=C main_step=M worker_step=W
 *         info=I requester=R target=P scope=SC signal=SG dest=PATH
 *   event seq=S cb=NAME phase=post n=N tid=T ret=RET cinfo=CI rinfo=RI requester=R src=PATH
 * seq numbers all events of the run in the order they happened; n counts the invocations of
 * that callback (n=1 at the first checkpoint, ...); status is cr_status(); in_cs is 1 if some
 * thread was inside a critical section when the callback started (must never happen); info is
 * 1 if cr_get_checkpoint_info() gave the fields that follow (requester, target, scope, signal
 * and dest). For phase=post: ret is what cr_checkpoint() returned (0 continuing, > 0
 * restarted); cinfo is 1 if cr_get_checkpoint_info() (wrongly) still answers after
 * cr_checkpoint(); rinfo is 1 if cr_get_restart_info() answered, with its requester and src.
 *
 * OUTFILE also holds
 *   work main=HEX worker=HEX steps=N     (the same in every run with the same arguments)
 *   threads main=TID worker=TID
 * Ready ($CRKIT_READY) once both threads have registered their callbacks; extra line
 * "worker TID".
 */
#include "example_protocol.h"

#include <libcr.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>

#define MAX_EVENTS 256

enum { CB_TC1, CB_TC2, CB_SM1, CB_SM2, CB_SW1, NUM_CBS };
static const char* const cb_names[NUM_CBS] = {"tc1", "tc2", "sm1", "sm2", "sw1"};

struct event {
  int seq;
  int cb;
  int post;
  int n;
  int tid;
  int status;
  int in_cs;
  long main_step, worker_step;
  int info; /* pre: checkpoint info present; post: restart info present */
  int cinfo_after;
  int ret;
  int requester, target, scope, signal;
  char path[PATH_MAX];
};

static struct event events[MAX_EVENTS];
static int n_events;    /* slots handed out (atomic) */
static int events_lost; /* events that found no slot */
static int invocations[NUM_CBS];

static volatile int in_cs_main, in_cs_worker;
static volatile long main_step, worker_step;
static long steps, interval_ms;
static int worker_cr_ok;
static volatile int worker_registered;
static pid_t main_tid, worker_tid;
static uint64_t main_state = 0x9e3779b97f4a7c15ULL, worker_state = 0x243f6a8885a308d3ULL;

static pid_t gettid_raw(void) {
  return (pid_t)syscall(SYS_gettid);
}

static void copy_str(char* dst, const char* src) {
  size_t i = 0;
  if (src)
    for (; src[i] && i < PATH_MAX - 1; i++) dst[i] = src[i];
  dst[i] = '\0';
}

/* Async-signal-safe: a slot, numbered in the order the events happen. */
static struct event* new_event(int cb, int post, int n) {
  int i = __atomic_fetch_add(&n_events, 1, __ATOMIC_SEQ_CST);
  if (i >= MAX_EVENTS) {
    __atomic_fetch_add(&events_lost, 1, __ATOMIC_SEQ_CST);
    return NULL;
  }
  struct event* e = &events[i];
  e->seq = i + 1;
  e->cb = cb;
  e->post = post;
  e->n = n;
  e->tid = gettid_raw();
  return e;
}

static int callback(void* arg) {
  const int cb = (int)(intptr_t)arg;
  const int n = __atomic_add_fetch(&invocations[cb], 1, __ATOMIC_SEQ_CST);
  struct event* e = new_event(cb, 0, n);
  if (e) {
    e->status = cr_status();
    e->in_cs = in_cs_main || in_cs_worker;
    e->main_step = main_step;
    e->worker_step = worker_step;
    const struct cr_checkpoint_info* ci = cr_get_checkpoint_info();
    e->info = ci != NULL;
    if (ci) {
      e->requester = (int)ci->requester;
      e->target = (int)ci->target;
      e->scope = (int)ci->scope;
      e->signal = ci->signal;
      copy_str(e->path, ci->dest);
    }
  }
  const int ret = cr_checkpoint(CR_CHECKPOINT_READY);
  struct event* p = new_event(cb, 1, n);
  if (p) {
    p->ret = ret;
    p->cinfo_after = cr_get_checkpoint_info() != NULL;
    const struct cr_restart_info* ri = cr_get_restart_info();
    p->info = ri != NULL;
    if (ri) {
      p->requester = (int)ri->requester;
      copy_str(p->path, ri->src);
    }
  }
  return 0;
}

static uint64_t mix(uint64_t s, long i) {
  s ^= (uint64_t)i + 0x9e3779b97f4a7c15ULL + (s << 6) + (s >> 2);
  s *= 0xff51afd7ed558ccdULL;
  return s ^ (s >> 33);
}

static void* worker_main(void* unused) {
  (void)unused;
  worker_tid = gettid_raw();
  cr_client_id_t id = cr_init();
  if (id < 0) ex_fail("worker: cr_init: %s", cr_strerror(errno));
  if (cr_register_callback(callback, (void*)(intptr_t)CB_SW1, CR_SIGNAL_CONTEXT) < 0)
    ex_fail("worker: cr_register_callback(sw1): %s", cr_strerror(errno));
  __atomic_store_n(&worker_registered, 1, __ATOMIC_RELEASE);
  for (long i = 1; i <= steps; i++) {
    if (cr_enter_cs(id) != 0) ex_fail("worker: cr_enter_cs: %s", cr_strerror(errno));
    in_cs_worker = 1;
    worker_state = mix(worker_state, i);
    worker_step = i;
    in_cs_worker = 0;
    if (cr_leave_cs(id) != 0) ex_fail("worker: cr_leave_cs: %s", cr_strerror(errno));
    ex_sleep_ms(interval_ms);
  }
  worker_cr_ok = 1;
  return NULL;
}

int main(int argc, char** argv) {
  ex_prog = "libcr_callbacks";
  if (argc != 4) ex_usage("OUTFILE STEPS INTERVAL_MS");
  const char* outfile = argv[1];
  steps = ex_parse_long("STEPS", argv[2], 1, 1000000L);
  interval_ms = ex_parse_long("INTERVAL_MS", argv[3], 0, 60000L);
  main_tid = gettid_raw();

  /* Outside a callback: no checkpoint to take part in. */
  if (cr_checkpoint(0) != -CR_ENOTCB) ex_fail("cr_checkpoint outside a callback is not ENOTCB");
  if (cr_get_checkpoint_info() != NULL || cr_get_restart_info() != NULL)
    ex_fail("cr_get_*_info answer outside a callback");
  if (cr_enter_cs(0) != -1 || errno != CR_ENOINIT)
    ex_fail("cr_enter_cs before cr_init does not fail with CR_ENOINIT");

  cr_client_id_t id = cr_init();
  if (id < 0) ex_fail("cr_init: %s", cr_strerror(errno));
  const int order[] = {CB_TC1, CB_TC2, CB_SM1, CB_SM2};
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
    const int cb = order[k];
    const int flags = cb == CB_TC1 || cb == CB_TC2 ? CR_THREAD_CONTEXT : CR_SIGNAL_CONTEXT;
    if (cr_register_callback(callback, (void*)(intptr_t)cb, flags) < 0)
      ex_fail("cr_register_callback(%s): %s", cb_names[cb], cr_strerror(errno));
  }
  if (cr_status() != CR_STATE_IDLE) ex_fail("cr_status is %d before any request", cr_status());

  pthread_t worker;
  int e = pthread_create(&worker, NULL, worker_main, NULL);
  if (e != 0) ex_fail("pthread_create: %s", strerror(e));
  while (!__atomic_load_n(&worker_registered, __ATOMIC_ACQUIRE)) ex_sleep_ms(1);
  char extra[64];
  snprintf(extra, sizeof extra, "worker %ld\n", (long)worker_tid);
  ex_ready(extra);

  for (long i = 1; i <= steps; i++) {
    if (cr_enter_cs(id) != 0) ex_fail("cr_enter_cs: %s", cr_strerror(errno));
    in_cs_main = 1;
    main_state = mix(main_state, i);
    main_step = i;
    in_cs_main = 0;
    if (cr_leave_cs(id) != 0) ex_fail("cr_leave_cs: %s", cr_strerror(errno));
    ex_sleep_ms(interval_ms);
  }
  e = pthread_join(worker, NULL);
  if (e != 0) ex_fail("pthread_join: %s", strerror(e));
  if (!worker_cr_ok || main_step != steps || worker_step != steps)
    ex_fail("state mismatch: main_step=%ld worker_step=%ld steps=%ld", main_step, worker_step,
            steps);
  if (cr_leave_cs(id) != -1 || errno != EINVAL)
    ex_fail("cr_leave_cs outside a critical section does not fail with EINVAL");

  int n = __atomic_load_n(&n_events, __ATOMIC_SEQ_CST);
  if (events_lost) ex_fail("%d callback events did not fit in the log", events_lost);
  if (n > MAX_EVENTS) n = MAX_EVENTS;
  size_t cap = 256 + (size_t)n * (PATH_MAX + 256);
  char* text = malloc(cap);
  if (!text) ex_fail("out of memory");
  size_t len =
      (size_t)snprintf(text, cap, "work main=%016llx worker=%016llx steps=%ld\n",
                       (unsigned long long)main_state, (unsigned long long)worker_state, steps);
  len += (size_t)snprintf(text + len, cap - len, "threads main=%ld worker=%ld\n", (long)main_tid,
                          (long)worker_tid);
  for (int i = 0; i < n; i++) {
    const struct event* ev = &events[i];
    if (!ev->post)
      len += (size_t)snprintf(text + len, cap - len,
                              "event seq=%d cb=%s phase=pre n=%d tid=%d status=%d in_cs=%d "
                              "main_step=%ld worker_step=%ld info=%d requester=%d target=%d "
                              "scope=%d signal=%d dest=%s\n",
                              ev->seq, cb_names[ev->cb], ev->n, ev->tid, ev->status, ev->in_cs,
                              ev->main_step, ev->worker_step, ev->info, ev->requester, ev->target,
                              ev->scope, ev->signal, ev->path);
    else
      len += (size_t)snprintf(text + len, cap - len,
                              "event seq=%d cb=%s phase=post n=%d tid=%d ret=%d cinfo=%d "
                              "rinfo=%d requester=%d src=%s\n",
                              ev->seq, cb_names[ev->cb], ev->n, ev->tid, ev->ret, ev->cinfo_after,
                              ev->info, ev->requester, ev->path);
  }
  ex_write_file(outfile, text);
  free(text);
  fprintf(stderr, "libcr_callbacks: done, %ld steps, %d callback events\n", steps, n);
  return 0;
}
