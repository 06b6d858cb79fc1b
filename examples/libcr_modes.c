/*
 * libcr_modes - a libcr program whose callback takes part in a checkpoint, leaves the process
 * out, cancels the checkpoint, fails it, or takes its time.
 *
 *   libcr_modes OUTFILE STEPS INTERVAL_MS MODE [CHILD_MODE]
 *
 * The main thread calls cr_init() and registers one thread-context callback, which does
 * (MODE):
 *   ready    cr_checkpoint(CR_CHECKPOINT_READY)
 *   omit     cr_checkpoint(CR_CHECKPOINT_OMIT): this process is left out
 *   temp42   cr_checkpoint(CR_CHECKPOINT_TEMP_FAILURE_CODE(42)): the checkpoint is cancelled
 *   perm     cr_checkpoint(CR_CHECKPOINT_PERM_FAILURE): cancelled, and the job killed
 *   return1  returns 1 without calling cr_checkpoint() (BLCR: a permanent failure)
 *   sleep10  sleeps 10 s, then cr_checkpoint(CR_CHECKPOINT_READY)
 * and records what cr_checkpoint() returned (not for return1). The main thread works STEPS
 * steps, INTERVAL_MS apart (not in a critical section: it goes on while the callback runs).
 *
 * With CHILD_MODE the program first starts a copy of itself as its child ("libcr_modes
 * OUTFILE.child STEPS INTERVAL_MS CHILD_MODE", fork + exec), waits until the child is ready and
 * at the end waits for it.
 *
 * Output (OUTFILE, written at the end):
 *   work steps=N sum=S
 *   callback n=N ret=RET          (one line per callback run that called cr_checkpoint())
 *   child exit=STATUS | child ECHILD     (with CHILD_MODE: the child's exit status, or ECHILD
 *                                         when it is not our child any more, after a restart
 *                                         of an image without it)
 * Ready ($CRKIT_READY) after the registration (and the child's readiness); extra line
 * "child PID" with CHILD_MODE.
 */
#include "example_protocol.h"

#include <libcr.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MAX_RUNS 16
static int mode_code;
static int runs;
static int rets[MAX_RUNS];

enum { M_READY, M_OMIT, M_TEMP42, M_PERM, M_RETURN1, M_SLEEP10 };
static const char* const mode_names[] = {"ready", "omit", "temp42", "perm", "return1", "sleep10"};

static int parse_mode(const char* s) {
  for (size_t i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++)
    if (strcmp(s, mode_names[i]) == 0) return (int)i;
  return -1;
}

static int callback(void* arg) {
  (void)arg;
  int flags = CR_CHECKPOINT_READY;
  switch (mode_code) {
    case M_OMIT:
      flags = CR_CHECKPOINT_OMIT;
      break;
    case M_TEMP42:
      flags = CR_CHECKPOINT_TEMP_FAILURE_CODE(42);
      break;
    case M_PERM:
      flags = CR_CHECKPOINT_PERM_FAILURE;
      break;
    case M_RETURN1:
      return 1;
    case M_SLEEP10:
      ex_sleep_ms(10000);
      break;
  }
  int ret = cr_checkpoint(flags);
  int i = __atomic_fetch_add(&runs, 1, __ATOMIC_SEQ_CST);
  if (i < MAX_RUNS) rets[i] = ret;
  return 0;
}

int main(int argc, char** argv) {
  ex_prog = "libcr_modes";
  const char* usage = "OUTFILE STEPS INTERVAL_MS MODE [CHILD_MODE]";
  if (argc != 5 && argc != 6) ex_usage(usage);
  const char* outfile = argv[1];
  const long steps = ex_parse_long("STEPS", argv[2], 1, 1000000L);
  const long interval_ms = ex_parse_long("INTERVAL_MS", argv[3], 0, 60000L);
  mode_code = parse_mode(argv[4]);
  if (mode_code < 0 || (argc == 6 && parse_mode(argv[5]) < 0)) ex_usage(usage);

  pid_t child = 0;
  if (argc == 6) {
    const char* ready = getenv("CRKIT_READY");
    char child_out[PATH_MAX], child_ready[PATH_MAX + 16] = "";
    snprintf(child_out, sizeof child_out, "%s.child", outfile);
    if (ready && ready[0]) snprintf(child_ready, sizeof child_ready, "%s.child", ready);
    child = fork();
    if (child < 0) ex_fail("fork: %s", strerror(errno));
    if (child == 0) {
      if (child_ready[0])
        setenv("CRKIT_READY", child_ready, 1);
      else
        unsetenv("CRKIT_READY");
      execl("/proc/self/exe", argv[0], child_out, argv[2], argv[3], argv[5], (char*)NULL);
      ex_fail("exec /proc/self/exe: %s", strerror(errno));
    }
    if (child_ready[0]) {
      struct stat st;
      for (int i = 0; stat(child_ready, &st) != 0; i++) {
        if (i > 60000) ex_fail("the child did not become ready");
        if (waitpid(child, NULL, WNOHANG) == child) ex_fail("the child exited early");
        ex_sleep_ms(1);
      }
    }
  }

  if (cr_init() < 0) ex_fail("cr_init: %s", cr_strerror(errno));
  if (cr_register_callback(callback, NULL, CR_THREAD_CONTEXT) < 0)
    ex_fail("cr_register_callback: %s", cr_strerror(errno));
  char extra[64] = "";
  if (child) snprintf(extra, sizeof extra, "child %ld\n", (long)child);
  ex_ready(extra);

  unsigned long long sum = 0;
  for (long i = 1; i <= steps; i++) {
    sum += (unsigned long long)i * (unsigned long long)i;
    ex_sleep_ms(interval_ms);
  }

  char text[4096];
  size_t len = (size_t)snprintf(text, sizeof text, "work steps=%ld sum=%llu\n", steps, sum);
  int n = __atomic_load_n(&runs, __ATOMIC_SEQ_CST);
  for (int i = 0; i < n && i < MAX_RUNS; i++)
    len +=
        (size_t)snprintf(text + len, sizeof text - len, "callback n=%d ret=%d\n", i + 1, rets[i]);
  if (child) {
    int status = 0;
    pid_t w;
    do w = waitpid(child, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w == child)
      len += (size_t)snprintf(text + len, sizeof text - len, "child exit=%d\n",
                              WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    else if (errno == ECHILD)
      len += (size_t)snprintf(text + len, sizeof text - len, "child ECHILD\n");
    else
      ex_fail("waitpid %ld: %s", (long)child, strerror(errno));
  }
  ex_write_file(outfile, text);
  fprintf(stderr, "libcr_modes: done (%s), %ld steps\n", mode_names[mode_code], steps);
  return 0;
}
