/*
 * sessions - a session with several process groups and an orphan: PIDs, process groups,
 * sessions and parent links must come back as they were.
 *
 *   sessions OUTFILE SECONDS
 *
 * The program calls setsid() first (it must not be a process-group leader: start it as a
 * background job of a non-interactive shell, or through fork) and so becomes the session
 * leader L (pid = pgid = sid). L forks:
 *   A   calls setpgid(0, 0) (leader of group A) and forks A1, which stays in group A;
 *   B   calls setpgid(0, 0) (leader of group B) and forks B1, which stays in group B;
 *   C   stays in L's group;
 *   X   forks O and exits at once: O becomes an orphan (its parent is now init or a
 *       subreaper), still in L's session and L's group. L reaps X right away.
 * Every process (L, A, A1, B, B1, C, O) records its pid, parent, process group and session,
 * checks them against the design above, tells L "started ROLE PID" over a pipe, sleeps
 * SECONDS in 100 ms steps, then checks them again and reports one line, e.g.
 *   "A1 pid=same pgrp=A sid=L parent=A"
 * Relations are written by role name, never as numbers, so an uninterrupted run and a
 * restarted run give the same text; a value that changed shows as "WRONG(number)". The
 * parent of O must not be L or X ("parent=orphan"); L's own parent is outside the program
 * and is not checked ("parent=outside").
 *
 * Ready ($CRKIT_READY, see example_protocol.h; line 1 = L's pid, which is also the session
 * id) once all six others have reported their start; extra lines "A PID", "A1 PID", "B PID",
 * "B1 PID", "C PID", "O PID". L then waits for the six reports and for A, B and C (A waits for
 * A1, B for B1; O is nobody's child in the program), each of which must exit 0, and writes
 * the seven report lines, sorted, and "done" to OUTFILE. It exits 0 whatever the reports
 * say: the caller compares OUTFILE with that of an uninterrupted run.
 */
#include "example_protocol.h"

#include <sys/wait.h>

#define NROLES 6 /* reporting to L: A A1 B B1 C O */
static const char *const roles[NROLES] = {"A", "A1", "B", "B1", "C", "O"};

static long steps; /* SECONDS in 100 ms steps */
static int report_fd = -1;

struct expect {
  const char *role;
  pid_t parent;            /* expected parent (0: O, an orphan; -1: L, not checked) */
  const char *parent_name; /* its role name */
  pid_t pgrp;              /* expected process group */
  const char *pgrp_name;
  pid_t sid; /* expected session: always L */
  pid_t x;   /* for O: X's pid (its first parent) */
};

static void send_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void send_line(const char *fmt, ...) {
  char line[200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof line) ex_fail("report line too long");
  if (ex_write_all(report_fd, line, (size_t)n) != 0) ex_fail("writing to L: %s", strerror(errno));
}

/* "NAME" if now == then, else "WRONG(now)". */
static const char *rel(char *buf, size_t len, pid_t now, pid_t then, const char *name) {
  if (now == then)
    snprintf(buf, len, "%s", name);
  else
    snprintf(buf, len, "WRONG(%ld)", (long)now);
  return buf;
}

struct ids {
  pid_t pid, ppid, pgrp, sid;
};

static struct ids ids_now(void) {
  struct ids i = {getpid(), getppid(), getpgrp(), getsid(0)};
  return i;
}

/* The start state of a role: check it against the design, or fail. */
static struct ids start_state(const struct expect *e) {
  const struct ids s = ids_now();
  if (s.pgrp != e->pgrp)
    ex_fail("%s: process group is %ld, expected %s's (%ld)", e->role, (long)s.pgrp, e->pgrp_name,
            (long)e->pgrp);
  if (s.sid != e->sid)
    ex_fail("%s: session is %ld, expected L's (%ld)", e->role, (long)s.sid, (long)e->sid);
  if (e->parent > 0 && s.ppid != e->parent)
    ex_fail("%s: parent is %ld, expected %s (%ld)", e->role, (long)s.ppid, e->parent_name,
            (long)e->parent);
  if (e->parent == 0 && (s.ppid == e->sid || s.ppid == e->x))
    ex_fail("%s: parent is %ld, expected it to be an orphan", e->role, (long)s.ppid);
  return s;
}

/* The report line of a role (no newline): its state now, compared with its start state. */
static void report_line(char *out, size_t len, const struct expect *e, const struct ids *s) {
  const struct ids n = ids_now();
  char pidb[32], pgrpb[32], sidb[32], parentb[32];
  rel(pidb, sizeof pidb, n.pid, s->pid, "same");
  rel(pgrpb, sizeof pgrpb, n.pgrp, s->pgrp, e->pgrp_name);
  rel(sidb, sizeof sidb, n.sid, s->sid, "L");
  if (e->parent > 0)
    rel(parentb, sizeof parentb, n.ppid, s->ppid, e->parent_name);
  else if (e->parent == 0) /* an orphan: any parent but L or X */
    rel(parentb, sizeof parentb, (n.ppid == e->sid || n.ppid == e->x) ? n.ppid : 0, 0, "orphan");
  else
    snprintf(parentb, sizeof parentb, "outside");
  snprintf(out, len, "%s pid=%s pgrp=%s sid=%s parent=%s", e->role, pidb, pgrpb, sidb, parentb);
}

/* The life of a member (not L): start, say "started", sleep, report to L. */
static void live(const struct expect *e) {
  const struct ids s = start_state(e);
  send_line("started %s %ld\n", e->role, (long)s.pid);
  for (long i = 0; i < steps; i++) ex_sleep_ms(100);
  char line[160];
  report_line(line, sizeof line, e, &s);
  send_line("report %s\n", line);
}

/* Wait for child pid (named role); it must exit 0. */
static void reap(pid_t pid, const char *role) {
  int st;
  pid_t got;
  while ((got = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (got != pid) ex_fail("waitpid %s (%ld): %s", role, (long)pid, strerror(errno));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    ex_fail("%s (%ld) ended with wait status 0x%x", role, (long)pid, st);
}

static pid_t fork_or_fail(void) {
  pid_t p = fork();
  if (p < 0) ex_fail("fork: %s", strerror(errno));
  return p;
}

/* A group leader G (A or B) with one member G1. Runs in the child; never returns. */
static void group(const char *name, const char *member, pid_t l) {
  if (setpgid(0, 0) != 0) ex_fail("%s: setpgid(0, 0): %s", name, strerror(errno));
  const pid_t g = getpid();
  pid_t m = fork_or_fail();
  if (m == 0) {
    struct expect e = {member, g, name, g, name, l, 0};
    live(&e);
    _exit(0);
  }
  struct expect e = {name, l, "L", g, name, l, 0};
  live(&e);
  reap(m, member);
  _exit(0);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
  ex_prog = "sessions";
  if (argc != 3) ex_usage("OUTFILE SECONDS");
  const char *outfile = argv[1];
  steps = ex_parse_long("SECONDS", argv[2], 1, 3600) * 10;

  if (setsid() < 0)
    ex_fail(
        "setsid: %s (start the program as a background job or through fork, so that it is "
        "not a process-group leader)",
        strerror(errno));
  const pid_t l = getpid();
  const struct expect le = {"L", -1, "outside", l, "L", l, 0};
  const struct ids ls = start_state(&le);
  FILE *out = fopen(outfile, "w");
  if (!out) ex_fail("cannot open %s: %s", outfile, strerror(errno));
  int p[2];
  if (pipe(p) != 0) ex_fail("pipe: %s", strerror(errno));
  report_fd = p[1];

  pid_t a = fork_or_fail();
  if (a == 0) {
    close(p[0]);
    group("A", "A1", l);
  }
  pid_t b = fork_or_fail();
  if (b == 0) {
    close(p[0]);
    group("B", "B1", l);
  }
  pid_t c = fork_or_fail();
  if (c == 0) {
    close(p[0]);
    struct expect e = {"C", l, "L", l, "L", l, 0};
    live(&e);
    _exit(0);
  }
  pid_t x = fork_or_fail();
  if (x == 0) {
    close(p[0]);
    const pid_t xpid = getpid();
    pid_t o = fork_or_fail();
    if (o == 0) {
      /* Wait until X has gone and O has been re-parented. */
      for (long polls = 0; getppid() == xpid; polls++) {
        if (polls > 10000) ex_fail("O: still a child of X after 10 s");
        ex_sleep_ms(1);
      }
      struct expect e = {"O", 0, "orphan", l, "L", l, xpid};
      live(&e);
      _exit(0);
    }
    _exit(0);
  }
  reap(x, "X");
  if (close(p[1]) != 0) ex_fail("close: %s", strerror(errno));

  /* Read "started ROLE PID" x6, then "report ROLE ..." x6. */
  pid_t pids[NROLES] = {0};
  char reports[NROLES + 1][200];
  memset(reports, 0, sizeof reports);
  int started = 0, reported = 0;
  char buf[256], line[200];
  size_t have = 0;
  while (reported < NROLES) {
    ssize_t got = read(p[0], buf, sizeof buf);
    if (got < 0) {
      if (errno == EINTR) continue;
      ex_fail("reading the pipe: %s", strerror(errno));
    }
    if (got == 0) ex_fail("the pipe ended after %d starts and %d reports", started, reported);
    for (ssize_t i = 0; i < got; i++) {
      if (buf[i] != '\n') {
        if (have >= sizeof line - 1) ex_fail("a line on the pipe is too long");
        line[have++] = buf[i];
        continue;
      }
      line[have] = '\0';
      have = 0;
      char role[8];
      long pid;
      int k = -1;
      if (sscanf(line, "started %7s %ld", role, &pid) == 2) {
        for (int j = 0; j < NROLES; j++)
          if (strcmp(role, roles[j]) == 0) k = j;
        if (k < 0 || pids[k] != 0) ex_fail("unexpected line '%s'", line);
        pids[k] = (pid_t)pid;
        if (++started == NROLES) {
          char extra[256];
          int n = 0;
          for (int j = 0; j < NROLES; j++)
            n += snprintf(extra + n, sizeof extra - (size_t)n, "%s %ld\n", roles[j], (long)pids[j]);
          ex_ready(extra);
        }
      } else if (sscanf(line, "report %7s", role) == 1) {
        for (int j = 0; j < NROLES; j++)
          if (strcmp(role, roles[j]) == 0) k = j;
        if (k < 0 || pids[k] == 0 || reports[k][0] != '\0') ex_fail("unexpected line '%s'", line);
        snprintf(reports[k], sizeof reports[k], "%s", line + strlen("report "));
        reported++;
      } else {
        ex_fail("malformed line '%s'", line);
      }
    }
  }
  reap(a, "A");
  reap(b, "B");
  reap(c, "C");

  /* L's own report: it has been blocked in read() most of the time. */
  report_line(reports[NROLES], sizeof reports[NROLES], &le, &ls);

  const char *sorted[NROLES + 1];
  for (int j = 0; j <= NROLES; j++) sorted[j] = reports[j];
  qsort(sorted, NROLES + 1, sizeof sorted[0], cmp_str);
  for (int j = 0; j <= NROLES; j++) fprintf(out, "%s\n", sorted[j]);
  fprintf(out, "done\n");
  if (fclose(out) != 0) ex_fail("closing %s: %s", outfile, strerror(errno));
  fprintf(stderr, "sessions: done\n");
  return 0;
}
