/*
 * libcr_restart - a libcr program that restarts a checkpoint image itself.
 *
 *   libcr_restart OUTFILE IMAGE pid|nopid
 *
 * Opens IMAGE, calls cr_request_restart() with cr_fd = IMAGE and cr_flags CR_RSTRT_RESTORE_PID
 * (pid: the default of cr_initialize_restart_args_t) or without it (nopid), then
 * cr_poll_restart() without a timeout, which returns the pid of the restored root process:
 * BLCR makes it the caller's child. The program checks that in /proc (the root's parent is
 * this process) and waits for it with waitpid().
 *
 * Output (OUTFILE):
 *   request rc=RC errno=E                       (cr_request_restart's return and errno)
 *   restored pid=P ppid=PP self=S poll_errno=E  (poll's return P, the parent of P in /proc,
 *                                                this process's pid)
 *   status exit=N | status signal=N             (what waitpid() said about P)
 * A request that fails writes the request line only; the program exits 0 in both cases, and 1
 * if something else goes wrong.
 */
#include "example_protocol.h"

#include <libcr.h>
#include <sys/wait.h>

/* The parent of pid according to /proc/PID/stat, or -1. */
static long ppid_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char* rp = strrchr(buf, ')');
  char state;
  long ppid;
  if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) return -1;
  return ppid;
}

int main(int argc, char** argv) {
  ex_prog = "libcr_restart";
  if (argc != 4 || (strcmp(argv[3], "pid") != 0 && strcmp(argv[3], "nopid") != 0))
    ex_usage("OUTFILE IMAGE pid|nopid");
  const char* outfile = argv[1];
  const char* image = argv[2];

  if (cr_init() < 0) ex_fail("cr_init: %s", cr_strerror(errno));
  int fd = open(image, O_RDONLY | O_CLOEXEC);
  if (fd < 0) ex_fail("cannot open %s: %s", image, strerror(errno));
  cr_restart_args_t args;
  if (cr_initialize_restart_args_t(&args) != 0)
    ex_fail("cr_initialize_restart_args_t: %s", cr_strerror(errno));
  if (!(args.cr_flags & CR_RSTRT_RESTORE_PID))
    ex_fail("cr_initialize_restart_args_t does not set CR_RSTRT_RESTORE_PID");
  args.cr_fd = fd;
  if (strcmp(argv[3], "nopid") == 0) args.cr_flags &= ~(unsigned)CR_RSTRT_RESTORE_PID;

  char text[1024];
  cr_restart_handle_t h;
  errno = 0;
  int rc = cr_request_restart(&args, &h);
  int e = rc < 0 ? errno : 0;
  size_t len = (size_t)snprintf(text, sizeof text, "request rc=%d errno=%d\n", rc, e);
  if (rc < 0) {
    fprintf(stderr, "libcr_restart: cr_request_restart failed: %s\n", cr_strerror(e));
    ex_write_file(outfile, text);
    return 0;
  }
  int pid;
  do {
    errno = 0;
    pid = cr_poll_restart(&h, NULL);
  } while (pid == CR_POLL_RSTRT_ERR_PRE && errno == EINTR);
  e = pid < 0 ? errno : 0;
  close(fd);
  const long ppid = pid > 0 ? ppid_of((pid_t)pid) : -1;
  len += (size_t)snprintf(text + len, sizeof text - len,
                          "restored pid=%d ppid=%ld self=%ld poll_errno=%d\n", pid, ppid,
                          (long)getpid(), e);
  fprintf(stderr, "libcr_restart: restored process %d (its parent: %ld)\n", pid, ppid);
  if (pid <= 0) {
    ex_write_file(outfile, text);
    ex_fail("cr_poll_restart returned %d: %s", pid, cr_strerror(e));
  }
  int status = 0;
  pid_t w;
  do w = waitpid((pid_t)pid, &status, 0);
  while (w < 0 && errno == EINTR);
  if (w != pid) {
    ex_write_file(outfile, text);
    ex_fail("waitpid(%d): %s", pid, strerror(errno));
  }
  if (WIFEXITED(status))
    len += (size_t)snprintf(text + len, sizeof text - len, "status exit=%d\n", WEXITSTATUS(status));
  else
    len += (size_t)snprintf(text + len, sizeof text - len, "status signal=%d\n", WTERMSIG(status));
  ex_write_file(outfile, text);
  fprintf(stderr, "libcr_restart: done\n");
  return 0;
}
