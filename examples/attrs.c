/*
 * attrs - process attributes that must survive a checkpoint and restart.
 *
 *   attrs OUTFILE WORKDIR SECONDS
 *
 * Sets up, then becomes ready ($CRKIT_READY, see example_protocol.h):
 *   - umask 027, working directory WORKDIR, process name "attrs-main";
 *   - RLIMIT_NOFILE soft limit 200 and RLIMIT_CORE 0/0 (lowered, so no privilege needed);
 *   - personality flag ADDR_NO_RANDOMIZE added;
 *   - a second thread named "attrs-worker" that blocks in pthread_cond_wait until the end
 *     (a thread sleeping in a futex across the checkpoint) and is joined at the end (the
 *     clear-tid address must be back for pthread_join to return);
 *   - no alternate signal stack (none may appear after the restart);
 *   - ITIMER_REAL firing SIGALRM every 20 ms into a counter, and ITIMER_VIRTUAL armed
 *     far in the future (its remaining value must still be set after restart).
 * Then sleeps SECONDS in small steps. At the end it checks every attribute, that the
 * SIGALRM counter kept growing during the last second (the timer runs after restart), and
 * writes one line: "ok umask=027 cwd=ok nofile=200 core=0 personality=ok names=ok
 * itimer=ok vtimer=ok join=ok".
 */
#include "example_protocol.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

static atomic_long ticks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done_flag;

static void on_alarm(int sig) {
  (void)sig;
  atomic_fetch_add(&ticks, 1);
}

static void *worker(void *arg) {
  (void)arg;
  prctl(PR_SET_NAME, "attrs-worker");
  pthread_mutex_lock(&mu);
  while (!done_flag) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return (void *)0x1234;
}

static void read_comm(const char *path, char *buf, size_t n) {
  FILE *f = fopen(path, "r");
  if (!f) ex_fail("cannot open %s: %s", path, strerror(errno));
  if (!fgets(buf, (int)n, f)) buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\n")] = '\0';
}

int main(int argc, char **argv) {
  ex_prog = "attrs";
  if (argc != 4) ex_usage("OUTFILE WORKDIR SECONDS");
  const char *wd = argv[2];
  long seconds = ex_parse_long("SECONDS", argv[3], 1, 3600);
  FILE *out = fopen(argv[1], "w");
  if (!out) ex_fail("cannot open %s: %s", argv[1], strerror(errno));

  umask(027);
  if (chdir(wd) != 0) ex_fail("chdir %s: %s", wd, strerror(errno));
  char cwd_before[PATH_MAX];
  if (!getcwd(cwd_before, sizeof cwd_before)) ex_fail("getcwd: %s", strerror(errno));
  prctl(PR_SET_NAME, "attrs-main");
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = 200;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) ex_fail("setrlimit NOFILE: %s", strerror(errno));
  struct rlimit nocore = {0, 0};
  if (setrlimit(RLIMIT_CORE, &nocore) != 0) ex_fail("setrlimit CORE: %s", strerror(errno));
  int pers = personality(0xffffffff);
  if (personality((unsigned long)pers | ADDR_NO_RANDOMIZE) < 0) ex_fail("personality: %s", strerror(errno));

  pthread_t th;
  if (pthread_create(&th, NULL, worker, NULL) != 0) ex_fail("pthread_create failed");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 20000}, {0, 20000}};
  if (setitimer(ITIMER_REAL, &it, NULL) != 0) ex_fail("setitimer REAL: %s", strerror(errno));
  struct itimerval vt = {{0, 0}, {100000, 0}};
  if (setitimer(ITIMER_VIRTUAL, &vt, NULL) != 0) ex_fail("setitimer VIRTUAL: %s", strerror(errno));

  ex_sleep_ms(50);
  ex_ready(NULL);
  for (long i = 0; i < seconds * 20; ++i) ex_sleep_ms(50);
  long before = atomic_load(&ticks);
  ex_sleep_ms(1000);
  long after = atomic_load(&ticks);

  mode_t m = umask(0);
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) ex_fail("getcwd: %s", strerror(errno));
  struct rlimit nf, core;
  getrlimit(RLIMIT_NOFILE, &nf);
  getrlimit(RLIMIT_CORE, &core);
  int pers_now = personality(0xffffffff);
  char main_name[32], worker_name[32], path[64];
  read_comm("/proc/self/comm", main_name, sizeof main_name);
  /* The worker is the only other thread: find it in /proc/self/task. */
  worker_name[0] = '\0';
  for (long tid = 1; tid < 4194304 && worker_name[0] == '\0'; ++tid) {
    if (tid == getpid()) continue;
    snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
    if (access(path, F_OK) == 0) read_comm(path, worker_name, sizeof worker_name);
  }
  struct itimerval vnow;
  getitimer(ITIMER_VIRTUAL, &vnow);
  stack_t ss;
  if (sigaltstack(NULL, &ss) != 0) ex_fail("sigaltstack: %s", strerror(errno));

  pthread_mutex_lock(&mu);
  done_flag = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  void *ret = NULL;
  if (pthread_join(th, &ret) != 0 || ret != (void *)0x1234) ex_fail("pthread_join did not return the worker's value");

  if (m != 027) ex_fail("umask is %03o, expected 027", (unsigned)m);
  if (strcmp(cwd, cwd_before) != 0) ex_fail("cwd is %s, expected %s", cwd, cwd_before);
  if (nf.rlim_cur != 200) ex_fail("RLIMIT_NOFILE soft limit is %llu, expected 200", (unsigned long long)nf.rlim_cur);
  if (core.rlim_cur != 0 || core.rlim_max != 0) ex_fail("RLIMIT_CORE is not 0/0");
  if (!(pers_now & ADDR_NO_RANDOMIZE)) ex_fail("personality %#x lost ADDR_NO_RANDOMIZE", pers_now);
  if (strcmp(main_name, "attrs-main") != 0) ex_fail("process name is '%s'", main_name);
  if (strcmp(worker_name, "attrs-worker") != 0) ex_fail("worker thread name is '%s'", worker_name);
  if (after - before < 10) ex_fail("ITIMER_REAL stopped: %ld ticks in the last second", after - before);
  if (!(ss.ss_flags & SS_DISABLE)) ex_fail("an alternate signal stack appeared (%p), the program set none", ss.ss_sp);
  if (vnow.it_value.tv_sec < 90000) ex_fail("ITIMER_VIRTUAL lost its value (%ld s left)", (long)vnow.it_value.tv_sec);

  fprintf(out, "ok umask=027 cwd=ok nofile=200 core=0 personality=ok names=ok itimer=ok vtimer=ok join=ok\n");
  if (fclose(out) != 0) ex_fail("closing output: %s", strerror(errno));
  fprintf(stderr, "attrs: done\n");
  return 0;
}
