#!/usr/bin/env python3
"""coordd_protocol.py - the real cr_coordd against fake peers (no MPI, no cr_agent).

Usage: coordd_protocol.py PATH/TO/cr_coordd [CASE...]

The fake clients (what cr_mpirun and cr_snapshot send) and fake node agents (what cr_agent
sends) are plain sockets speaking the JSON-lines protocol of coord/protocol/messages.md. Each
case starts its own private coordinator (--listen 127.0.0.1:0 --private --token-file F), uses
its own job name, and checks the coordinator's side of the protocol: authentication, job
start, PMI fences, snapshots that commit, snapshots abandoned in phase 1 (prepare) and
phase 2 (checkpoint), time-outs, a rank that dies during a snapshot, and the end of a job.

Every read has a time-out, so a coordinator that does not answer fails the case instead of
hanging. Prints PASS/FAIL per case; exits 1 if any case failed (2 on bad usage). Standard
library only. The coordinator records the agents' XXH64 sums without re-hashing the images
(coord/daemon/cr_coordd.cpp, snapshot_progress), so the fake agents compute them with the
pure-Python XXH64 below (checked against the reference vectors at start-up).
"""

import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

DEFAULT_TIMEOUT = 5.0  # seconds for any single expected message
QUIET = 0.4  # seconds of silence that show a message was (rightly) not sent


# ---------------------------------------------------------------------------------------------
# XXH64 (seed 0), as libxxhash's XXH64() and crkit::coord::xxh64_file compute it.

_M64 = (1 << 64) - 1
_P1, _P2, _P3, _P4, _P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                           0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M64, 31) * _P1) & _M64


def _merge(h, v):
    return (((h ^ _round(0, v)) * _P1) + _P4) & _M64


def xxh64(data, seed=0):
    n, p = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed & _M64, (seed - _P1) & _M64]
        while p + 32 <= n:
            for i in range(4):
                v[i] = _round(v[i], int.from_bytes(data[p + 8 * i:p + 8 * i + 8], "little"))
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M64
        for x in v:
            h = _merge(h, x)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while p + 8 <= n:
        h ^= _round(0, int.from_bytes(data[p:p + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p:p + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


def xxh64_hex(data):
    return "%016x" % xxh64(data)


def xxh64_selftest():
    vectors = {b"": "ef46db3751d8e999", b"a": "d24ec4f1a98c6e5b", b"abc": "44bc2cf5ad770999"}
    for data, want in vectors.items():
        if xxh64_hex(data) != want:
            raise SystemExit("xxh64 self-test failed for %r: %s, expected %s" %
                             (data, xxh64_hex(data), want))


# ---------------------------------------------------------------------------------------------
# Test plumbing


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def check_eq(got, want, what):
    if got != want:
        raise Failure("%s: got %r, expected %r" % (what, got, want))


def log(msg):
    print("  " + msg, flush=True)


class Conn:
    """One TCP connection to the coordinator: JSON lines, every read with a time-out.

    With token set, the token is added to the connection's first message (as every real
    client and agent must do)."""

    def __init__(self, port, token, name):
        self.name = name
        self.token = token
        self.first = True
        self.buf = b""
        self.eof = False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, msg):
        if self.first and self.token is not None and "token" not in msg:
            msg = dict(msg, token=self.token)
        self.first = False
        self.send_raw((json.dumps(msg) + "\n").encode())

    def send_raw(self, data):
        self.first = False
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more into buf; False on end of stream, raises socket.timeout at deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv(self, timeout=DEFAULT_TIMEOUT, what="a message"):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Failure("%s: the coordinator closed the connection while %s waited for %s"
                              % (self.name, self.name, what))
            try:
                if not self._fill(deadline):
                    continue
            except socket.timeout:
                raise Failure("%s: nothing within %.1f s (waiting for %s)" % (self.name, timeout, what))
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            m = json.loads(line.decode())
        except ValueError:
            raise Failure("%s: not a JSON line: %r" % (self.name, line[:300]))
        check(isinstance(m, dict), "%s: not a JSON object: %r" % (self.name, m))
        return m

    def expect(self, op, timeout=DEFAULT_TIMEOUT):
        m = self.recv(timeout, "'%s'" % op)
        check(m.get("op") == op, "%s: expected '%s', got %s" % (self.name, op, json.dumps(m)))
        return m

    def reply(self, timeout=DEFAULT_TIMEOUT, what="a reply"):
        m = self.recv(timeout, what)
        check("ok" in m, "%s: a reply without 'ok': %s" % (self.name, json.dumps(m)))
        return m

    def expect_ok(self, timeout=DEFAULT_TIMEOUT, what="a reply"):
        m = self.reply(timeout, what)
        check(m["ok"] is True, "%s: expected ok:true for %s, got %s" %
              (self.name, what, json.dumps(m)))
        return m

    def expect_refusal(self, code, timeout=DEFAULT_TIMEOUT, what="a refusal"):
        m = self.reply(timeout, what)
        check(m["ok"] is False, "%s: expected ok:false for %s, got %s" %
              (self.name, what, json.dumps(m)))
        check(isinstance(m.get("error"), str) and m["error"],
              "%s: a refusal without an error text: %s" % (self.name, json.dumps(m)))
        if code is not None:
            check_eq(m.get("code"), code, "%s: the code of the refusal %s" %
                     (self.name, json.dumps(m)))
        return m

    def quiet(self, secs=QUIET, why=""):
        """Nothing may arrive for secs seconds (a message must not have been sent)."""
        deadline = time.monotonic() + secs
        while b"\n" not in self.buf and not self.eof:
            try:
                self._fill(deadline)
            except socket.timeout:
                return
        if b"\n" in self.buf:
            raise Failure("%s: unexpected message%s: %s" %
                          (self.name, " (" + why + ")" if why else "",
                           self.buf.split(b"\n", 1)[0][:300].decode(errors="replace")))
        raise Failure("%s: the coordinator closed the connection unexpectedly%s" %
                      (self.name, " (" + why + ")" if why else ""))

    def expect_closed(self, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self.eof:
            check(b"\n" not in self.buf, "%s: a message instead of the end of the connection: %s"
                  % (self.name, self.buf.split(b"\n", 1)[0][:300].decode(errors="replace")))
            try:
                self._fill(deadline)
            except socket.timeout:
                raise Failure("%s: the coordinator did not close the connection within %.1f s" %
                              (self.name, timeout))
        check(b"\n" not in self.buf, "%s: a message before the end of the connection: %s" %
              (self.name, self.buf.split(b"\n", 1)[0][:300].decode(errors="replace")))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


_DAEMON_TOKEN = object()


class Daemon:
    """A cr_coordd process: stdout and stderr go to files in the work directory."""

    def __init__(self, binary, work, name, args=None, stdin_data=None, listen=True):
        self.name = name
        self.token_file = os.path.join(work, name + ".token")
        if args is None:
            args = ["--token-file", self.token_file]
        self.out_path = os.path.join(work, name + ".stdout")
        self.err_path = os.path.join(work, name + ".stderr")
        self.cmd = [binary, "--listen", "127.0.0.1:0", "--private"] + list(args)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=err,
                stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL)
        if stdin_data is not None:
            self.proc.stdin.write(stdin_data)
            self.proc.stdin.close()
        self.port = None
        self._token = None
        if listen:
            self.wait_port()

    def stdout_text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_port(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mt = re.search(r"^cr_coordd: listening on (\d+)$", self.stdout_text(), re.M)
            if mt:
                self.port = int(mt.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise Failure("cr_coordd exited with status %s before listening; stderr: %s" %
                              (self.proc.returncode, self.stderr_text().strip()))
            time.sleep(0.02)
        raise Failure("cr_coordd printed no 'cr_coordd: listening on PORT' within %.0f s" %
                      timeout)

    @property
    def token(self):
        if self._token is None:
            with open(self.token_file) as f:
                self._token = f.readline().rstrip("\r\n")
        return self._token

    def connect(self, name, token=_DAEMON_TOKEN):
        """A connection that sends the daemon's token (or token: None for none)."""
        return Conn(self.port, self.token if token is _DAEMON_TOKEN else token, name)

    def request(self, msg, name="client"):
        """A one-shot request on its own connection (like cr_snapshot --status)."""
        c = self.connect(name)
        try:
            c.send(msg)
            return c.reply(what="the reply to '%s'" % msg.get("op"))
        finally:
            c.close()

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


HOSTS = ["fakehost0", "fakehost1"]
NODE_RANKS = [[0, 1], [2, 3]]


class Job:
    """A job of 4 ranks on two fake nodes of 2 ranks each, run by fake agents."""

    def __init__(self, daemon, name, work):
        self.d = daemon
        self.name = name
        self.ckdir = os.path.join(work, "ckpt-" + name)
        self.cwd = os.path.join(work, "cwd-" + name)
        os.makedirs(self.cwd, exist_ok=True)
        self.job_dir = os.path.join(self.ckdir, name)
        self.spec = {
            "job": name,
            "nranks": 4,
            "nodes": [{"host": HOSTS[k], "ranks": NODE_RANKS[k]} for k in range(2)],
            "argv": ["/opt/fake/ring_halo", "500", "20000"],
            "env": {"CRKIT_FAKE_VAR": "fake value"},
            "cwd": self.cwd,
            "checkpoint_dir": self.ckdir,
        }
        self.client = None
        self.agents = []

    def submit(self):
        self.client = self.d.connect("submitting client")
        self.client.send({"op": "submit", "spec": self.spec})
        r = self.client.expect_ok(what="the reply to submit")
        check_eq(r.get("job"), self.name, "the job id in the reply to submit")
        return r

    def hello(self, k, check_start=True):
        a = self.d.connect("agent %d" % k)
        a.send({"op": "agent_hello", "job": self.name, "node": k, "host": HOSTS[k],
                "pid": 40000 + k})
        start = a.expect("start")
        if check_start:
            check_eq(start.get("mode"), "launch", "start.mode")
            check_eq(start.get("ranks"), NODE_RANKS[k], "start.ranks of node %d" % k)
            check_eq(start.get("nranks"), 4, "start.nranks")
            check_eq(start.get("kvsname"), "crkit_" + self.name, "start.kvsname")
            check_eq(start.get("argv"), self.spec["argv"], "start.argv")
            check_eq(start.get("env"), self.spec["env"], "start.env")
            check_eq(start.get("cwd"), self.spec["cwd"], "start.cwd")
            check_eq(start.get("pid_namespace"), "auto", "start.pid_namespace")
            check_eq(start.get("per_rank_images"), False, "start.per_rank_images")
            check_eq(start.get("ppn_map"), "(vector,(0,2,2))", "start.ppn_map (2 nodes x 2)")
            check("images" not in start, "start has 'images' for a launch: %s" % start)
        return a, start

    def start(self):
        """submit, both agents connect and report their ranks started."""
        self.submit()
        self.agents = [self.hello(k)[0] for k in range(2)]
        for k, a in enumerate(self.agents):
            a.send({"op": "started", "pids": [50000 + r for r in NODE_RANKS[k]]})
        self.wait_state("running")

    def status(self):
        r = self.d.request({"op": "status", "job": self.name}, "status client")
        check(r["ok"] is True, "status refused: %s" % json.dumps(r))
        return r["job"]

    def wait_state(self, state, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.get("state") == state:
                return st
            if time.monotonic() > deadline:
                raise Failure("job %s: state %r, expected %r" % (self.name, st.get("state"), state))
            time.sleep(0.05)

    def snap_dir(self, seq):
        return os.path.join(self.job_dir, "snap-%06d" % seq)

    def snap_entries(self):
        return sorted(n for n in os.listdir(self.job_dir) if n.startswith("snap-"))

    def request_snapshot(self, **extra):
        c = self.d.connect("snapshot client")
        msg = {"op": "snapshot", "job": self.name}
        msg.update(extra)
        c.send(msg)
        return c

    def expect_prepare(self, seq):
        orders = []
        for k, a in enumerate(self.agents):
            m = a.expect("prepare")
            check_eq(m.get("seq"), seq, "prepare.seq at node %d" % k)
            check_eq(m.get("dir"), self.snap_dir(seq), "prepare.dir at node %d" % k)
            check_eq(m.get("image"), "%s/node-%d.img" % (self.snap_dir(seq), k),
                     "prepare.image at node %d" % k)
            orders.append(m)
        return orders

    def prepared(self, k, seq, ok=True, error=""):
        self.agents[k].send({"op": "prepared", "seq": seq, "ok": ok, "error": error})

    def expect_checkpoint(self, seq):
        orders = []
        for k, a in enumerate(self.agents):
            m = a.expect("checkpoint")
            check_eq(m.get("seq"), seq, "checkpoint.seq at node %d" % k)
            check_eq(m.get("dir"), self.snap_dir(seq), "checkpoint.dir at node %d" % k)
            img = m.get("image")
            check_eq(img, "%s/node-%d.img" % (self.snap_dir(seq), k),
                     "checkpoint.image at node %d" % k)
            check(os.path.isabs(img), "checkpoint.image is not absolute: %r" % img)
            check_eq(m.get("term"), False, "checkpoint.term at node %d" % k)
            orders.append(m)
        return orders

    def write_image(self, k, path, seq):
        # Not a multiple of 32 or 8 bytes: every part of XXH64 is used.
        data = (("fake node image: job %s node %d seq %d\n" % (self.name, k, seq)) * 40 +
                "x" * (3 + k)).encode()
        with open(path, "wb") as f:
            f.write(data)
        return {"image": path, "ranks": NODE_RANKS[k], "size": len(data),
                "xxh64": xxh64_hex(data)}

    def exited(self, k, status=0, message=""):
        self.agents[k].send({"op": "exited", "status": status, "message": message})

    def close(self):
        for c in self.agents + ([self.client] if self.client else []):
            c.close()


def running_job(binary, work, daemons, name):
    """A private cr_coordd of the case's own (the runner stops it) and the job NAME on it,
    started on both fake nodes."""
    d = Daemon(binary, work, name)
    daemons.append(d)
    job = Job(d, name, work)
    job.start()
    return d, job


def check_no_snapshot(job, seq, why):
    check(not os.path.exists(job.snap_dir(seq)),
          "%s: %s still exists (%s)" % (why, job.snap_dir(seq),
                                        os.listdir(job.snap_dir(seq))
                                        if os.path.isdir(job.snap_dir(seq)) else "?"))
    check_eq(job.snap_entries(), [], "%s: snapshot directories left in %s" % (why, job.job_dir))
    r = job.d.request({"op": "list", "job": job.name}, "list client")
    check(r["ok"] is True and r.get("snapshots") == [],
          "%s: list shows snapshots: %s" % (why, json.dumps(r)))


def check_running_without_snapshot(job, why):
    st = job.status()
    check_eq(st.get("state"), "running", "%s: the job's state" % why)
    check("snapshot" not in st, "%s: status still shows a snapshot: %s" % (why, st.get("snapshot")))


# ---------------------------------------------------------------------------------------------
# The cases. Each gets (cr_coordd, a fresh work directory, a list to register daemons in for
# the clean-up).


def case_auth(binary, work, daemons):
    d = Daemon(binary, work, "auth")
    daemons.append(d)
    st = os.stat(d.token_file)
    check_eq(stat.S_IMODE(st.st_mode), 0o600, "mode of the token file cr_coordd created")
    check(re.fullmatch(r"[0-9a-f]{64}", d.token) is not None,
          "the created token is not 64 hex digits: %r" % d.token)

    # No token: refused with EACCES, then closed.
    c = d.connect("no-token client", token=None)
    c.send({"op": "jobs"})
    m = c.expect_refusal(errno.EACCES, what="the refusal of a request without a token")
    check("authentication failed" in m["error"], "error text: %r" % m["error"])
    c.expect_closed()
    c.close()

    # A wrong token: the same.
    c = d.connect("wrong-token client", token="0" * 64)
    c.send({"op": "jobs"})
    m = c.expect_refusal(errno.EACCES, what="the refusal of a wrong token")
    check("authentication failed" in m["error"], "error text: %r" % m["error"])
    c.expect_closed()
    c.close()

    # A token of another type (a number) is no token either.
    c = d.connect("numeric-token client", token=None)
    c.send({"op": "jobs", "token": 12345})
    c.expect_refusal(errno.EACCES, what="the refusal of a non-string token")
    c.expect_closed()
    c.close()

    # An agent is no exception.
    c = d.connect("no-token agent", token=None)
    c.send({"op": "agent_hello", "job": "nojob", "node": 0, "host": "h", "pid": 1})
    c.expect_refusal(errno.EACCES, what="the refusal of agent_hello without a token")
    c.expect_closed()
    c.close()

    # A refused first line followed (in the same segment) by one with the right token: the
    # connection stays refused and closed, the second line gets no answer.
    c = d.connect("pipelining client", token=None)
    c.send_raw((json.dumps({"op": "jobs"}) + "\n" +
                json.dumps({"op": "jobs", "token": d.token}) + "\n").encode())
    c.expect_refusal(errno.EACCES, what="the refusal of the first line")
    c.expect_closed()
    c.close()

    # The right token: answered; later messages of the connection need none.
    c = d.connect("authenticated client")
    c.send({"op": "jobs"})
    r = c.expect_ok(what="the reply to jobs")
    check_eq(r.get("jobs"), [], "jobs of a fresh coordinator")
    c.send({"op": "jobs"})  # no token this time
    c.expect_ok(what="the reply to a second jobs without a token")
    c.send({"op": "status", "job": "nosuchjob"})
    c.expect_refusal(errno.ESRCH, what="status of an unknown job")
    c.close()
    check(d.proc.poll() is None, "cr_coordd ended during the authentication checks")
    d.stop()

    # --token-stdin: the token is the first line of stdin.
    tok = "stdin-token-" + "5a" * 16
    d2 = Daemon(binary, work, "auth-stdin", args=["--token-stdin"],
                stdin_data=(tok + "\nignored second line\n").encode())
    daemons.append(d2)
    c = d2.connect("stdin-token client", token=tok)
    c.send({"op": "jobs"})
    c.expect_ok(what="jobs with the --token-stdin token")
    c.close()
    c = d2.connect("wrong stdin-token client", token=tok + "x")
    c.send({"op": "jobs"})
    c.expect_refusal(errno.EACCES, what="a token that only starts like the right one")
    c.expect_closed()
    c.close()
    d2.stop()

    # A token file that group or others can read: refused, named, non-zero exit.
    for mode in (0o644, 0o640, 0o604):
        path = os.path.join(work, "token-%o" % mode)
        with open(path, "w") as f:
            f.write("a-valid-looking-token-0123456789abcdef\n")
        os.chmod(path, mode)
        d3 = Daemon(binary, work, "auth-%o" % mode, args=["--token-file", path], listen=False)
        daemons.append(d3)
        rc = d3.wait_exit(5)
        check(rc is not None, "cr_coordd did not exit with a mode-%04o token file" % mode)
        check(rc != 0, "cr_coordd exited 0 with a mode-%04o token file" % mode)
        err = d3.stderr_text()
        check(path in err, "stderr does not name the mode-%04o token file %s: %r" %
              (mode, path, err))
        check("listening on" not in d3.stdout_text(),
              "cr_coordd listened with a mode-%04o token file" % mode)
        log("mode %04o: exit %d: %s" % (mode, rc, err.strip().splitlines()[-1] if err else ""))


def case_lifecycle(binary, work, daemons):
    d = Daemon(binary, work, "lifecycle")
    daemons.append(d)
    job = Job(d, "life", work)
    job.submit()
    check(os.path.isdir(job.job_dir), "the job directory %s was not created" % job.job_dir)
    check_eq(stat.S_IMODE(os.stat(job.job_dir).st_mode), 0o700, "mode of the job directory")
    st = job.status()
    check_eq(st.get("state"), "starting", "state before the agents started")
    check_eq(st.get("nranks"), 4, "status nranks")
    check_eq([n.get("ranks") for n in st.get("nodes", [])], NODE_RANKS, "status node ranks")

    # A second job of the same name is refused while the first runs.
    c = d.connect("duplicate submitter")
    c.send({"op": "submit", "spec": job.spec})
    c.expect_refusal(errno.EEXIST, what="the refusal of a duplicate job name")
    c.close()

    a0, _ = job.hello(0)
    a1, _ = job.hello(1)
    job.agents = [a0, a1]

    # A second agent for node 0, and one for an unknown job: told to go away.
    for what, hello in (("a second agent for node 0",
                         {"op": "agent_hello", "job": job.name, "node": 0, "host": "x", "pid": 1}),
                        ("an agent of an unknown job",
                         {"op": "agent_hello", "job": "nosuchjob", "node": 0, "host": "x",
                          "pid": 1}),
                        ("an agent for node 2 of 2",
                         {"op": "agent_hello", "job": job.name, "node": 2, "host": "x",
                          "pid": 1})):
        x = d.connect(what)
        x.send(hello)
        m = x.expect("kill")
        check("reason" in m, "%s: kill without a reason: %s" % (what, m))
        x.expect_closed()
        x.close()

    # A snapshot is refused while the job is starting.
    c = job.request_snapshot()
    c.expect_refusal(errno.EAGAIN, what="a snapshot of a starting job")
    c.close()

    a0.send({"op": "started", "pids": [50000, 50001]})
    time.sleep(0.1)
    check_eq(job.status().get("state"), "starting", "state with one node of two started")
    a1.send({"op": "started", "pids": [50002, 50003]})
    st = job.wait_state("running")
    for k, n in enumerate(st["nodes"]):
        check(n.get("connected") is True and n.get("started") is True and n.get("exited") is False,
              "status of node %d: %s" % (k, n))
    r = d.request({"op": "jobs"})
    check(r["ok"] and [(j["job"], j["state"], j["nranks"]) for j in r["jobs"]] ==
          [(job.name, "running", 4)], "jobs: %s" % json.dumps(r))

    # PMI fence, epoch 1: nobody is released until every node entered it.
    a0.send({"op": "fence", "puts": {"P0-businesscard": "tcp://10.0.0.1:1", "P1-businesscard":
                                     "tcp://10.0.0.1:2"}})
    a0.quiet(why="fence_done before node 1 entered the fence")
    a1.send({"op": "fence", "puts": {"P2-businesscard": "tcp://10.0.0.2:1", "P3-businesscard":
                                     "tcp://10.0.0.2:2"}})
    want = {"P0-businesscard": "tcp://10.0.0.1:1", "P1-businesscard": "tcp://10.0.0.1:2",
            "P2-businesscard": "tcp://10.0.0.2:1", "P3-businesscard": "tcp://10.0.0.2:2"}
    for k, a in enumerate((a0, a1)):
        check_eq(a.expect("fence_done").get("kvs"), want, "fence_done.kvs at node %d" % k)
    # Epoch 2: only this epoch's puts (none from node 0).
    a1.send({"op": "fence", "puts": {"late": "v2"}})
    a1.quiet(why="fence_done of epoch 2 before node 0 entered it")
    a0.send({"op": "fence", "puts": {}})
    for k, a in enumerate((a0, a1)):
        check_eq(a.expect("fence_done").get("kvs"), {"late": "v2"},
                 "fence_done.kvs of epoch 2 at node %d" % k)
    job.close()


def case_snapshot_commit(binary, work, daemons):
    d, job = running_job(binary, work, daemons, "commit")
    c = job.request_snapshot()
    job.expect_prepare(1)
    snap = job.snap_dir(1)
    check(os.path.isdir(snap), "the snapshot directory %s does not exist during prepare" % snap)
    check_eq(stat.S_IMODE(os.stat(snap).st_mode), 0o700, "mode of the snapshot directory")
    # A second snapshot while this one runs: EBUSY.
    c2 = job.request_snapshot()
    c2.expect_refusal(errno.EBUSY, what="a second snapshot while one is in progress")
    c2.close()
    job.prepared(0, 1)
    job.agents[0].quiet(why="checkpoint before node 1 was prepared")
    job.prepared(1, 1)
    orders = job.expect_checkpoint(1)
    images = [job.write_image(k, orders[k]["image"], 1) for k in range(2)]
    job.agents[0].send({"op": "checkpoint_done", "seq": 1, "ok": True, "images": [images[0]],
                        "quiesce_ms": 12.5, "dump_ms": 30.0})
    c.quiet(why="the snapshot's reply before node 1 reported its image")
    st = job.status()
    snapst = st.get("snapshot")
    check(isinstance(snapst, dict), "status during the snapshot has no snapshot: %s" % st)
    check(snapst.get("seq") == 1 and snapst.get("nodes_done") == 1 and snapst.get("nodes") == 2,
          "status.snapshot during the snapshot: %s" % snapst)
    if "phase" not in snapst:
        log("note: status.snapshot has no 'phase' (messages.md lists one): %s" %
            json.dumps(snapst))
    job.agents[1].send({"op": "checkpoint_done", "seq": 1, "ok": True, "images": [images[1]],
                        "quiesce_ms": 20.0, "dump_ms": 25.5})
    r = c.expect_ok(what="the committed snapshot")
    check_eq(r.get("seq"), 1, "seq of the snapshot")
    check_eq(r.get("dir"), snap, "dir of the snapshot")
    check_eq(r.get("manifest"), os.path.join(snap, "manifest.json"), "manifest of the snapshot")
    check_eq(r.get("quiesce_ms"), 20.0, "quiesce_ms (the slowest node)")
    check_eq(r.get("dump_ms"), 30.0, "dump_ms (the slowest node)")
    check(isinstance(r.get("total_ms"), (int, float)) and r["total_ms"] >= 0,
          "total_ms: %r" % r.get("total_ms"))
    c.close()
    for a in job.agents:
        a.quiet(QUIET / 2, why="a message after a committed non-term snapshot")

    man_path = os.path.join(snap, "manifest.json")
    check(os.path.isfile(man_path), "%s does not exist" % man_path)
    check(not os.path.exists(os.path.join(snap, "manifest.json.tmp")) and
          [n for n in os.listdir(snap) if n not in ("manifest.json", "node-0.img", "node-1.img")]
          == [], "stray files in %s: %s" % (snap, os.listdir(snap)))
    with open(man_path) as f:
        man = json.load(f)
    check_eq(man.get("job"), job.name, "manifest job")
    check_eq(man.get("seq"), 1, "manifest seq")
    check_eq(man.get("nranks"), 4, "manifest nranks")
    check_eq(man.get("hosts"), HOSTS, "manifest hosts")
    check_eq(man.get("argv"), job.spec["argv"], "manifest argv")
    check_eq(man.get("cwd"), job.spec["cwd"], "manifest cwd")
    check_eq(man.get("env"), job.spec["env"], "manifest env")
    check(isinstance(man.get("created"), str) and man["created"], "manifest created")
    got = [(im.get("node"), im.get("host"), im.get("ranks"), im.get("path"), im.get("size"),
            im.get("xxh64")) for im in man.get("images", [])]
    want = [(k, HOSTS[k], NODE_RANKS[k], "node-%d.img" % k, images[k]["size"], images[k]["xxh64"])
            for k in range(2)]
    check_eq(got, want, "manifest images")
    # The recorded sums are those of the files (the coordinator records, does not re-hash).
    for k in range(2):
        with open(os.path.join(snap, "node-%d.img" % k), "rb") as f:
            check_eq(xxh64_hex(f.read()), man["images"][k]["xxh64"], "xxh64 of node-%d.img" % k)

    r = d.request({"op": "list", "job": job.name}, "list client")
    check(r["ok"] is True, "list refused: %s" % json.dumps(r))
    snaps = r.get("snapshots")
    check(isinstance(snaps, list) and len(snaps) == 1, "list: %s" % json.dumps(r))
    check_eq((snaps[0].get("seq"), snaps[0].get("dir")), (1, snap), "list entry")
    # created comes from read_manifest, which checks the images' sizes: "" would mean it failed.
    check_eq(snaps[0].get("created"), man["created"], "list created (read back from the manifest)")
    check_running_without_snapshot(job, "after the commit")

    # The next snapshot gets seq 2.
    c = job.request_snapshot()
    job.expect_prepare(2)
    c.close()  # the requester goes; the snapshot goes on (periodic-like, nobody to answer)
    job.close()


def case_abandon_prepare(binary, work, daemons):
    d, job = running_job(binary, work, daemons, "prepfail")
    c = job.request_snapshot()
    job.expect_prepare(1)
    job.prepared(0, 1)
    why = "node 1 (fakehost1): cannot create files in /fake: No space left on device"
    job.prepared(1, 1, ok=False, error=why)
    m = c.expect_refusal(errno.EIO, what="the abandoned snapshot")
    check_eq(m["error"], why, "the error of the abandoned snapshot")
    c.close()
    for k, a in enumerate(job.agents):
        a.quiet(why="a message to node %d after a phase-1 abandon" % k)
    check(not os.path.exists(os.path.join(job.snap_dir(1), "manifest.json")),
          "a manifest was written")
    check_no_snapshot(job, 1, "after a refused prepare")
    check_running_without_snapshot(job, "after a refused prepare")
    # The job takes snapshots again (seq 2: seq 1 is used up).
    c = job.request_snapshot()
    job.expect_prepare(2)
    c.close()
    job.close()


def case_abandon_checkpoint(binary, work, daemons):
    d, job = running_job(binary, work, daemons, "ckptfail")
    c = job.request_snapshot()
    job.expect_prepare(1)
    job.prepared(0, 1)
    job.prepared(1, 1)
    orders = job.expect_checkpoint(1)
    # Node 0 is writing its image (a partial file) when node 1 fails.
    with open(orders[0]["image"], "wb") as f:
        f.write(b"partial image of node 0")
    why = "node 1 (fakehost1): cr_checkpoint: writing the image: Input/output error"
    job.agents[1].send({"op": "checkpoint_done", "seq": 1, "ok": False, "error": why})
    m = job.agents[0].expect("checkpoint_abort")
    check_eq(m.get("seq"), 1, "checkpoint_abort.seq")
    check_eq(m.get("reason"), why, "checkpoint_abort.reason")
    job.agents[1].quiet(why="node 1 failed itself and needs no checkpoint_abort")
    # The coordinator waits for node 0 to confirm the abort before it answers.
    c.quiet(why="the reply before node 0 confirmed the abort")
    job.agents[0].send({"op": "checkpoint_done", "seq": 1, "ok": False,
                        "error": "node 0 (fakehost0): abandoned: " + why})
    m = c.expect_refusal(errno.EIO, what="the abandoned snapshot")
    check_eq(m["error"], why, "the error of the abandoned snapshot (the first failure)")
    c.close()
    check_no_snapshot(job, 1, "after a failed checkpoint")
    check_running_without_snapshot(job, "after a failed checkpoint")
    for a in job.agents:
        a.quiet(QUIET / 2, why="kill or terminate after an abandoned snapshot")
    job.close()


def case_timeout(binary, work, daemons):
    d, job = running_job(binary, work, daemons, "timeout")
    t0 = time.monotonic()
    c = job.request_snapshot(timeout=2)
    job.expect_prepare(1)
    job.prepared(0, 1)  # node 1 never answers
    m = c.expect_refusal(errno.ETIMEDOUT, timeout=8, what="the timed-out snapshot")
    took = time.monotonic() - t0
    log("refused after %.2f s: %s" % (took, m["error"]))
    check(1.8 <= took <= 6.0, "the time-out of 2 s took %.2f s" % took)
    check("timed out" in m["error"], "the error does not mention the time-out: %r" % m["error"])
    check("1 (fakehost1)" in m["error"], "the error does not name node 1: %r" % m["error"])
    if "0 (fakehost0)" in m["error"]:
        log("note: the error also names node 0, which had answered prepare")
    c.close()
    check_no_snapshot(job, 1, "after the time-out")
    check_running_without_snapshot(job, "after the time-out")
    # Node 1's late answer belongs to an abandoned snapshot: nobody is told to checkpoint.
    job.prepared(1, 1)
    for k, a in enumerate(job.agents):
        a.quiet(why="a message to node %d after a late prepared" % k)
    job.close()


def _rank_exited(binary, work, daemons, name, phase2):
    d, job = running_job(binary, work, daemons, name)
    waiter = d.connect("waiting client")
    waiter.send({"op": "wait", "job": job.name})
    c = job.request_snapshot()
    job.expect_prepare(1)
    job.prepared(0, 1)
    if phase2:
        job.prepared(1, 1)
        job.expect_checkpoint(1)
    job.agents[1].send({"op": "rank_exited", "rank": 3, "status": 137,
                        "message": "signal 9 (Killed)"})
    for k, a in enumerate(job.agents):
        if phase2:
            m = a.expect("checkpoint_abort")
            check_eq(m.get("seq"), 1, "checkpoint_abort.seq at node %d" % k)
        m = a.expect("kill")
        check("rank 3" in m.get("reason", ""), "kill.reason at node %d: %s" % (k, m))
    if phase2:
        c.quiet(why="the reply before the nodes confirmed the abort")
        for k in range(2):
            job.agents[k].send({"op": "checkpoint_done", "seq": 1, "ok": False,
                                "error": "node %d: abandoned" % k})
    m = c.expect_refusal(errno.ESRCH, what="the snapshot abandoned for a dead rank")
    check("rank 3" in m["error"] and "during the snapshot" in m["error"],
          "the error does not name the rank: %r" % m["error"])
    c.close()
    check_no_snapshot(job, 1, "after a rank died")
    st = job.status()
    check_eq(st.get("state"), "running", "state while the agents kill their ranks")
    # The agents kill their ranks and report.
    waiter.quiet(QUIET / 2, why="wait answered before the nodes exited")
    job.exited(0, 137, "killed: rank 3 died")
    job.exited(1, 137, "rank 3 ended with signal 9")
    r = waiter.expect_ok(what="the reply to wait")
    check_eq(r.get("exit_code"), 137, "the job's exit code")
    check("rank 3" in r.get("message", ""), "the job's message: %r" % r.get("message"))
    rc = d.wait_exit(5)
    check(rc is not None, "the private coordinator did not exit after its job ended")
    job.close()
    waiter.close()


def case_rank_exited_prepare(binary, work, daemons):
    _rank_exited(binary, work, daemons, "rankdied1", phase2=False)


def case_rank_exited_checkpoint(binary, work, daemons):
    _rank_exited(binary, work, daemons, "rankdied2", phase2=True)


def case_end(binary, work, daemons):
    d, job = running_job(binary, work, daemons, "end")
    waiter = d.connect("waiting client")
    waiter.send({"op": "wait", "job": job.name})
    waiter.quiet(why="wait answered while the job runs")
    job.exited(0, 0)
    waiter.quiet(why="wait answered with one node of two running")
    job.agents[1].quiet(QUIET / 2, why="a message to node 1 when node 0 ended normally")
    check(d.proc.poll() is None, "the coordinator ended with one node still running")
    job.exited(1, 0)
    r = waiter.expect_ok(what="the reply to wait")
    check_eq(r.get("job"), job.name, "wait.job")
    check_eq(r.get("exit_code"), 0, "wait.exit_code")
    check_eq(r.get("message"), "", "wait.message")
    check_eq(r.get("terminated_by_snapshot"), False, "wait.terminated_by_snapshot")
    rc = d.wait_exit(5)
    check(rc is not None, "the private coordinator did not exit after its job ended")
    check_eq(rc, 0, "the exit status of the private coordinator")
    job.close()
    waiter.close()


def case_finishing_job(binary, work, daemons):
    """A node whose ranks ended normally: a snapshot is refused at once (EAGAIN, naming it),
    and one in its first phase when it ends is abandoned (not left waiting for it)."""
    d, job = running_job(binary, work, daemons, "finishing")
    c = job.request_snapshot(timeout=30)
    job.expect_prepare(1)
    job.prepared(1, 1)
    job.exited(0, 0)  # node 0 ends before it answered prepare
    t0 = time.monotonic()
    r = c.expect_refusal(errno.ESRCH, timeout=5, what="the snapshot whose node 0 ended")
    check(time.monotonic() - t0 < 3, "the abandon took %.1f s" % (time.monotonic() - t0))
    check("node 0" in r["error"], "the refusal names node 0: %r" % r["error"])
    check_no_snapshot(job, 1, "the abandoned snapshot")
    c.close()
    c2 = job.request_snapshot()
    r2 = c2.expect_refusal(errno.EAGAIN, what="a snapshot of a finishing job")
    check("node 0" in r2["error"] and "ended" in r2["error"], "the refusal: %r" % r2["error"])
    c2.close()
    job.exited(1, 0)
    job.close()


def case_refusal_drops_pipelined(binary, work, daemons):
    """What a connection sent after its refused first line is not executed."""
    d = Daemon(binary, work, "pipelined")
    daemons.append(d)
    job = Job(d, "pipelined", work)
    c = d.connect("pipelining client", token=None)
    c.send_raw((json.dumps({"op": "jobs"}) + "\n" +
                json.dumps({"op": "submit", "token": d.token, "spec": job.spec}) + "\n").encode())
    c.expect_refusal(errno.EACCES, what="the token-less first line")
    c.expect_closed()
    time.sleep(0.3)
    jobs = [x["job"] for x in d.request({"op": "jobs"})["jobs"]]
    check(job.name not in jobs, "the submit after the refused line was executed: jobs %s" % jobs)


CASES = [
    ("auth", case_auth),
    ("lifecycle", case_lifecycle),
    ("snapshot_commit", case_snapshot_commit),
    ("abandon_prepare", case_abandon_prepare),
    ("abandon_checkpoint", case_abandon_checkpoint),
    ("timeout", case_timeout),
    ("rank_exited_prepare", case_rank_exited_prepare),
    ("rank_exited_checkpoint", case_rank_exited_checkpoint),
    ("end", case_end),
    ("finishing_job", case_finishing_job),
    ("refusal_drops_pipelined", case_refusal_drops_pipelined),
]


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    binary = argv[1]
    if not os.access(binary, os.X_OK):
        print("not an executable: %s" % binary)
        return 2
    wanted = argv[2:]
    unknown = [w for w in wanted if w not in dict(CASES)]
    if unknown:
        print("unknown case(s): %s (cases: %s)" % (" ".join(unknown),
                                                    " ".join(n for n, _ in CASES)))
        return 2
    xxh64_selftest()
    root = tempfile.mkdtemp(prefix="coordd_protocol.")
    failed = []
    t_all = time.monotonic()
    for name, fn in CASES:
        if wanted and name not in wanted:
            continue
        work = os.path.join(root, name)
        os.makedirs(work)
        daemons = []
        t0 = time.monotonic()
        try:
            fn(binary, work, daemons)
            err = None
        except Failure as e:
            err = str(e)
        except Exception as e:  # a bug of the test or an unexpected socket error
            err = "%s: %s" % (type(e).__name__, e)
        finally:
            for dm in daemons:
                dm.stop()
        if err is None:
            print("PASS %s (%.1f s)" % (name, time.monotonic() - t0), flush=True)
            continue
        failed.append(name)
        print("FAIL %s: %s" % (name, err), flush=True)
        for dm in daemons:
            text = dm.stderr_text().strip()
            if text:
                print("  --- stderr of cr_coordd '%s' (exit %s), last lines:" %
                      (dm.name, dm.proc.returncode))
                for line in text.splitlines()[-25:]:
                    print("    " + line)
    print("%d case(s) failed%s; %.1f s" % (len(failed), ": " + " ".join(failed) if failed else "",
                                           time.monotonic() - t_all))
    if failed:
        print("work directory kept: %s" % root)
        return 1
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
