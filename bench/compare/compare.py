#!/usr/bin/env python3
"""Side-by-side benchmark: crkit vs CRIU on the same target, the same machine, the same run.

    compare.py --crkit-bin DIR --criu PATH --memtarget PATH --vm-readv-bw PATH --dir IMAGEDIR
               [--rounds R] [--out results.json] [--markdown FILE] [--svg FILE]
               [--scenarios NAME ...] [--quick] [--crkit-opts "..."]

Usually run through bench/run-compare.sh; bench/README.md says what each number means. Needs
root (CRIU needs it, and both tools restore the original PIDs). Standard library only.

For every scenario and round, crkit and CRIU take turns (the one that goes first alternates
from round to round), each on a freshly started memtarget: start it, wait until it is ready,
reset its gap counter (SIGUSR1), dump it in "continue" mode (timed, peak RSS of the dumping
process), ask it for its report (SIGUSR2: the longest gap its 1 ms ticker saw = the frozen time
as the target felt it, and whether its memory checksum still matches), kill it, restore it
(timed), ask the restored tree for its report (the checksum must match), kill it, remove the
image. A tool that fails in one round is recorded with the tail of its log; the run goes on.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svg_plot  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
TOOLS = ("crkit", "criu")

# ---------------------------------------------------------------------------------------------
# scenarios

KINDS = {
    # kind: (pattern, extra threads per process, processes)
    "random": ("random", 0, 1),
    "text": ("text", 0, 1),
    "zero": ("zero", 0, 1),
    "threads16": ("random", 16, 1),
    "tree8": ("random", 0, 8),
}
FULL_SCENARIOS = ["random-1g", "text-1g", "zero-1g", "random-4g", "text-4g", "zero-4g",
                  "threads16-1g", "tree8-1g"]
QUICK_SCENARIOS = ["random-256m", "text-256m", "zero-256m", "threads16-256m", "tree8-256m"]


def parse_scenario(name):
    m = re.fullmatch(r"([a-z0-9]+)-(\d+)([mg])", name)
    if not m or m.group(1) not in KINDS:
        raise argparse.ArgumentTypeError(
            f"bad scenario {name!r}: KIND-SIZE with KIND one of {', '.join(KINDS)} and SIZE like "
            f"256m, 1g, 4g")
    kind, n, unit = m.group(1), int(m.group(2)), m.group(3)
    mib = n * (1024 if unit == "g" else 1)
    pattern, threads, procs = KINDS[kind]
    if mib < procs:
        raise argparse.ArgumentTypeError(f"scenario {name}: too little memory for {procs} processes")
    return {"name": name, "kind": kind, "mib": mib, "pattern": pattern, "threads": threads,
            "procs": procs}


# ---------------------------------------------------------------------------------------------
# small helpers

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def run_text(cmd, timeout=60):
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def pid_alive(pid):
    """True while /proc/PID exists (a zombie counts: its PID is not free yet)."""
    return os.path.exists(f"/proc/{pid}")


def proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def is_memtarget(pid):
    try:
        with open(f"/proc/{pid}/comm") as fh:
            if fh.read().strip() == "memtarget":
                return True
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "memtarget"
    except OSError:
        return False


def set_child_subreaper():
    """Orphans of the targets and tools (restored trees, criu -d, crkit --no-wait) become our
    children, so that we reap them at once and their PIDs are free for the next restore.
    (PID 1 on some VMs reaps slowly.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log(f"warning: PR_SET_CHILD_SUBREAPER failed: {os.strerror(ctypes.get_errno())}")
    except OSError as e:
        log(f"warning: PR_SET_CHILD_SUBREAPER unavailable: {e}")


def reap_pid(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reap_all_orphans():
    """Reap every finished child. Only called when no Popen of ours is outstanding."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def wait4_timeout(proc, timeout, exe=None):
    """Wait for a Popen child with a timeout; returns (status, rusage, peak_rss_kib) or None on
    timeout. A pidfd makes the wake-up exact.

    Peak RSS: ru_maxrss of a child that Python forked and exec'd is at least Python's own peak
    RSS (the kernel carries the pre-exec memory's high-water mark over the exec), so a small
    tool would show Python's size. While waiting, the child's VmHWM is therefore sampled every
    5 ms once it runs EXE; ru_maxrss is used when it exceeds our own peak (then it is the tool's
    exactly)."""
    own = vm_hwm_kib("self")
    fd = os.pidfd_open(proc.pid)
    sampled = 0
    real_exe = os.path.realpath(exe) if exe else None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], min(left, 0.005))
            if r:
                break
            try:
                if real_exe is None or os.readlink(f"/proc/{proc.pid}/exe") == real_exe:
                    sampled = max(sampled, vm_hwm_kib(proc.pid))
            except OSError:
                pass
    finally:
        os.close(fd)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = ru.ru_maxrss if ru.ru_maxrss > own else sampled
    return status, ru, peak


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def fsync_tree(path):
    """fsync every file of an image directory and the directory itself (CRIU does not)."""
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def image_size(path):
    """(apparent bytes, allocated bytes) of a file or of every file in a directory."""
    if os.path.isfile(path):
        st = os.stat(path)
        return st.st_size, st.st_blocks * 512
    total = alloc = 0
    for name in os.listdir(path):
        st = os.stat(os.path.join(path, name))
        total += st.st_size
        alloc += st.st_blocks * 512
    return total, alloc


def read_varint(b, i):
    shift = val = 0
    while True:
        c = b[i]
        i += 1
        val |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return val, i


def parse_proto(b):
    """Minimal protobuf decoder: {field: value} (varints and nested bytes; last one wins)."""
    out, i = {}, 0
    while i < len(b):
        key, i = read_varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            out[field], i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            out[field] = b[i:i + n]
            i += n
        elif wt == 1:
            out[field] = int.from_bytes(b[i:i + 8], "little")
            i += 8
        elif wt == 5:
            out[field] = int.from_bytes(b[i:i + 4], "little")
            i += 4
        else:
            raise ValueError("unsupported protobuf wire type")
    return out


def criu_stats(path, which):
    """CRIU's own timings from stats-dump / stats-restore (images/stats.proto), microseconds.
    The file: two 32-bit magics, a 32-bit length, a stats_entry{dump=1, restore=2}."""
    try:
        with open(path, "rb") as f:
            b = f.read()
        n = int.from_bytes(b[8:12], "little")
        entry = parse_proto(b[12:12 + n])
        if which == "dump":
            d = parse_proto(entry[1])
            names = {1: "freezing_time_us", 2: "frozen_time_us", 3: "memdump_time_us",
                     4: "memwrite_time_us", 5: "pages_scanned", 6: "pages_skipped_parent",
                     7: "pages_written", 9: "pages_lazy"}
        else:
            d = parse_proto(entry[2])
            names = {1: "pages_compared", 2: "pages_skipped_cow", 3: "forking_time_us",
                     4: "restore_time_us", 5: "pages_restored"}
        return {v: d[k] for k, v in names.items() if k in d and isinstance(d[k], int)}
    except (OSError, KeyError, IndexError, ValueError) as e:
        return {"error": f"cannot read {os.path.basename(path)}: {e}"}


# ---------------------------------------------------------------------------------------------
# machine limits

def measure_write_bw(directory, total_bytes, do_fsync, settle):
    path = os.path.join(directory, ".crkit-bench-write-test")
    remove_path(path)
    os.sync()
    time.sleep(settle)
    buf = os.urandom(8 * MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.monotonic()
        written = 0
        while written < total_bytes:
            written += os.write(fd, buf)
        if do_fsync:
            os.fsync(fd)
        dt = time.monotonic() - t0
    finally:
        os.close(fd)
        remove_path(path)
        os.sync()
    return written / dt / 1e9


def measure_limits(args, quick):
    reps = 1 if quick else 3
    total = (512 if quick else 2048) * MiB
    log(f"machine limits: sequential write {total // MiB} MiB in 8 MiB writes to {args.dir} "
        f"(x{reps}), process_vm_readv bandwidth")
    fs = [measure_write_bw(args.dir, total, True, args.settle) for _ in range(reps)]
    nofs = [measure_write_bw(args.dir, total, False, args.settle) for _ in range(reps)]
    limits = {"write_bytes": total, "write_fsync_gbps": statistics.median(fs),
              "write_fsync_gbps_all": fs, "write_nofsync_gbps": statistics.median(nofs),
              "write_nofsync_gbps_all": nofs}
    rc, out = run_text([args.vm_readv_bw, "--mib", "256" if quick else "1024", "--passes", "5"],
                       timeout=300)
    if rc == 0:
        try:
            j = json.loads(out.splitlines()[-1])
            limits["vm_readv"] = j
            limits["vm_readv_gbps"] = j["gbps_median"]
        except (ValueError, KeyError, IndexError):
            limits["vm_readv_error"] = out[-2000:]
    else:
        limits["vm_readv_error"] = out[-2000:]
    log(f"  write+fsync {limits['write_fsync_gbps']:.2f} GB/s, write (page cache) "
        f"{limits['write_nofsync_gbps']:.2f} GB/s, process_vm_readv "
        f"{limits.get('vm_readv_gbps', float('nan')):.2f} GB/s")
    return limits


# ---------------------------------------------------------------------------------------------
# one run: start target, dump, report, kill, restore, report, kill

class RunError(Exception):
    def __init__(self, stage, msg, log_tail=None):
        super().__init__(msg)
        self.stage, self.msg, self.log_tail = stage, msg, log_tail


class Bench:
    def __init__(self, args):
        self.args = args
        self.crkit_opts = shlex.split(args.crkit_opts or "")
        self.cr_checkpoint = os.path.join(args.crkit_bin, "cr_checkpoint")
        self.cr_restart = os.path.join(args.crkit_bin, "cr_restart")
        self.work = args.work
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.ready = os.path.join(self.work, "target.ready")
        self.live_pids = set()   # target PIDs that may still run (for the final cleanup)
        self.restore_mode = self.detect_restore_mode()

    def detect_restore_mode(self):
        if self.args.crkit_restore_mode != "auto":
            return self.args.crkit_restore_mode
        rc, out = run_text([self.cr_restart, "--help"])
        return "no-wait" if "--no-wait" in out else "poll"

    # -- the target -------------------------------------------------------------------------

    def clear_reports(self):
        d, base = os.path.dirname(self.ready), os.path.basename(self.ready)
        for name in os.listdir(d):
            if name.startswith(base + ".report.") or name.startswith(base + ".tmp"):
                remove_path(os.path.join(d, name))

    def start_target(self, sc, tag):
        remove_path(self.ready)
        self.clear_reports()
        out = open(os.path.join(self.logs, f"{tag}-target.out"), "wb")
        err = open(os.path.join(self.logs, f"{tag}-target.err"), "wb")
        cmd = [self.args.memtarget, "--mib", str(sc["mib"]), "--pattern", sc["pattern"],
               "--threads", str(sc["threads"]), "--procs", str(sc["procs"]), "--ready", self.ready]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True)
        out.close()
        err.close()
        self.live_pids.add(proc.pid)
        deadline = time.monotonic() + 120 + sc["mib"] / 50
        while not os.path.exists(self.ready):
            if proc.poll() is not None:
                raise RunError("start", f"memtarget exited with {proc.returncode} during setup",
                               tail(os.path.join(self.logs, f"{tag}-target.err")))
            if time.monotonic() > deadline:
                raise RunError("start", "memtarget not ready in time")
            time.sleep(0.01)
        with open(self.ready) as f:
            lines = f.read().split("\n")
        pids = [int(x) for x in lines[1].split()[1:]]
        self.live_pids.update(pids)
        if len(pids) != sc["procs"] or pids[0] != proc.pid:
            raise RunError("start", f"unexpected ready file: {lines!r}")
        return proc, pids

    def get_reports(self, pids, timeout):
        """SIGUSR2 to the root (which forwards it); returns {pid: report dict}."""
        self.clear_reports()
        os.kill(pids[0], signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        reports = {}
        while len(reports) < len(pids):
            for pid in pids:
                if pid in reports:
                    continue
                path = f"{self.ready}.report.{pid}"
                if os.path.exists(path):
                    with open(path) as f:
                        reports[pid] = dict(line.split(" ", 1) for line in f.read().splitlines()
                                            if " " in line)
            if len(reports) == len(pids):
                break
            if time.monotonic() > deadline:
                missing = [p for p in pids if p not in reports]
                dead = [p for p in missing if not pid_alive(p)]
                raise RunError("report", f"no report from PIDs {missing} within {timeout:.0f} s"
                               + (f" (gone: {dead})" if dead else ""))
            time.sleep(0.005)
        return reports

    def kill_tree(self, pids, popens=()):
        for pid in pids:
            # only a memtarget of ours: a PID that was freed may have been reused meanwhile
            if pid in self.live_pids and is_memtarget(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in popens:
            if p is not None:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    kill_group(p)
        deadline = time.monotonic() + 30
        while True:
            for pid in pids:
                reap_pid(pid)
            alive = [pid for pid in pids if pid_alive(pid)]
            if not alive:
                break
            if time.monotonic() > deadline:
                raise RunError("kill", f"PIDs {alive} still exist 30 s after SIGKILL")
            time.sleep(0.005)
        self.live_pids.difference_update(pids)

    # -- dump -------------------------------------------------------------------------------

    def dump(self, tool, pids, tag, res):
        root = pids[0]
        errlog = os.path.join(self.logs, f"{tag}-dump.log")
        if tool == "crkit":
            img = os.path.join(self.args.dir, "crkit.img")
            outp = os.path.join(self.logs, f"{tag}-dump.json")
            cmd = [self.cr_checkpoint, "--json", "-f", img] + self.crkit_opts + [str(root)]
            with open(outp, "wb") as o, open(errlog, "wb") as e:
                t0 = time.monotonic()
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                     start_new_session=True)
                r = wait4_timeout(p, self.args.timeout, self.cr_checkpoint)
                dt = time.monotonic() - t0
            if r is None:
                kill_group(p)
                raise RunError("dump", f"cr_checkpoint timed out after {self.args.timeout} s",
                               tail(errlog))
            res["dump_peak_rss_mib"] = r[2] / 1024
            if p.returncode != 0:
                raise RunError("dump", f"cr_checkpoint exited with {p.returncode}",
                               tail(errlog) + "\n" + tail(outp, 5))
            try:
                with open(outp) as f:
                    j = json.load(f)
            except ValueError as ex:
                raise RunError("dump", f"cr_checkpoint --json output unreadable: {ex}",
                               tail(outp))
            res["crkit_json"] = j
            res["tool_frozen_ms"] = j.get("frozen_seconds", float("nan")) * 1000
            res["dump_s"] = dt
            res["image_path"] = img
        else:
            d = os.path.join(self.args.dir, "criu")
            remove_path(d)
            os.makedirs(d)
            cmd = [self.args.criu, "dump", "-t", str(root), "-D", d, "--leave-running",
                   "-o", errlog, "-v1"] + shlex.split(self.args.criu_opts or "")
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            r = wait4_timeout(p, self.args.timeout, self.args.criu)
            t1 = time.monotonic()
            if r is None:
                kill_group(p)
                raise RunError("dump", f"criu dump timed out after {self.args.timeout} s",
                               tail(errlog))
            res["dump_peak_rss_mib"] = r[2] / 1024
            if p.returncode != 0:
                raise RunError("dump", f"criu dump exited with {p.returncode}", tail(errlog))
            fsync_tree(d)       # the same sync policy as crkit's default --sync
            t2 = time.monotonic()
            res["dump_s"] = t2 - t0
            res["criu_dump_only_s"] = t1 - t0
            res["criu_fsync_s"] = t2 - t1
            st = criu_stats(os.path.join(d, "stats-dump"), "dump")
            res["criu_stats_dump"] = st
            if "frozen_time_us" in st:
                res["tool_frozen_ms"] = st["frozen_time_us"] / 1000
            res["image_path"] = d
        res["image_bytes"], res["image_alloc_bytes"] = image_size(res["image_path"])

    # -- restore ----------------------------------------------------------------------------

    def restored_ready(self, sc, pids):
        """poll mode: every process exists, runs its own code (not traced or stopped), has its
        threads and its SIGUSR1/SIGUSR2 handlers again."""
        want_threads = str(2 + sc["threads"])
        usr_bits = (1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGUSR2 - 1))
        for pid in pids:
            st = proc_status(pid)
            if st is None:
                return False
            if st.get("TracerPid", "0").strip() != "0":
                return False
            if st.get("State", "?")[0] in "tTXZ":
                return False
            if st.get("Threads", "").strip() != want_threads:
                return False
            if int(st.get("SigCgt", "0"), 16) & usr_bits != usr_bits:
                return False
        return True

    def restore(self, tool, sc, pids, tag, res):
        """Returns the Popen that must be waited for after the restored tree is killed."""
        errlog = os.path.join(self.logs, f"{tag}-restore.log")
        if self.args.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        if tool == "crkit":
            img = res["image_path"]
            mode = self.restore_mode
            res["restore_mode"] = mode
            if mode == "no-wait":
                cmd = [self.cr_restart, "--no-wait", img]
            else:
                cmd = [self.cr_restart, img]
            e = open(errlog, "wb")
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=e, stderr=e,
                                 start_new_session=True)
            e.close()
            if mode == "no-wait":
                r = wait4_timeout(p, self.args.timeout, self.cr_restart)
                dt = time.monotonic() - t0
                if r is None:
                    kill_group(p)
                    raise RunError("restore", "cr_restart --no-wait timed out", tail(errlog))
                res["restore_peak_rss_mib"] = r[2] / 1024
                if p.returncode != 0:
                    raise RunError("restore", f"cr_restart --no-wait exited with {p.returncode}",
                                   tail(errlog))
                res["restore_s"] = dt
                return None
            deadline = t0 + self.args.timeout
            while not self.restored_ready(sc, pids):
                if p.poll() is not None:
                    raise RunError("restore", f"cr_restart exited with {p.returncode} before "
                                   f"the restored tree ran", tail(errlog))
                if time.monotonic() > deadline:
                    kill_group(p)
                    raise RunError("restore", "restored tree not running in time", tail(errlog))
                time.sleep(0.001)
            res["restore_s"] = time.monotonic() - t0
            return p
        d = res["image_path"]
        cmd = [self.args.criu, "restore", "-D", d, "-d", "-o", errlog, "-v1"] + \
            shlex.split(self.args.criu_restore_opts or "")
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        r = wait4_timeout(p, self.args.timeout, self.args.criu)
        dt = time.monotonic() - t0
        if r is None:
            kill_group(p)
            raise RunError("restore", "criu restore timed out", tail(errlog))
        res["restore_peak_rss_mib"] = r[2] / 1024
        if p.returncode != 0:
            raise RunError("restore", f"criu restore exited with {p.returncode}", tail(errlog))
        res["restore_s"] = dt
        st = criu_stats(os.path.join(d, "stats-restore"), "restore")
        res["criu_stats_restore"] = st
        return None

    # -- the whole run ----------------------------------------------------------------------

    def run_one(self, sc, rnd, tool):
        tag = f"{sc['name']}-r{rnd}-{tool}"
        res = {"tool": tool, "round": rnd, "scenario": sc["name"]}
        target = restorer = None
        pids = []
        stage = "start"
        try:
            target, pids = self.start_target(sc, tag)
            res["pids"] = pids
            time.sleep(0.3)
            os.kill(pids[0], signal.SIGUSR1)        # reset the gap counters of the whole tree
            time.sleep(0.3)
            stage = "dump"
            self.dump(tool, pids, tag, res)
            stage = "report"
            reps = self.get_reports(pids, 60 + sc["mib"] / 100)
            res["target_frozen_ms"] = max(int(r["maxgap_us"]) for r in reps.values()) / 1000
            res["target_frozen_ms_per_proc"] = [int(reps[p]["maxgap_us"]) / 1000 for p in pids]
            bad = [p for p in pids if reps[p].get("verify") != "ok"]
            if bad:
                raise RunError("report", f"memory checksum changed by the dump in PIDs {bad}")
            stage = "kill"
            self.kill_tree(pids, [target])
            target = None
            stage = "restore"
            self.live_pids.update(pids)         # the restore brings them back
            restorer = self.restore(tool, sc, pids, tag, res)
            stage = "verify"
            reps = self.get_reports(pids, 60 + sc["mib"] / 100)
            bad = [p for p in pids if reps[p].get("verify") != "ok"]
            res["restore_verify"] = "ok" if not bad else "bad"
            if bad:
                raise RunError("verify", f"restored memory differs (checksum) in PIDs {bad}")
            stage = "kill"
            self.kill_tree(pids, [restorer])
            restorer = None
        except RunError as e:
            res["error"] = f"{e.stage}: {e.msg}"
            if e.log_tail:
                res["log_tail"] = e.log_tail
            log(f"    {tool}: ERROR {res['error']}" +
                (("\n      " + "\n      ".join(e.log_tail.splitlines()[-8:])) if e.log_tail else ""))
        except (OSError, ValueError, KeyError) as e:
            res["error"] = f"{stage}: {type(e).__name__}: {e}"
            log(f"    {tool}: ERROR {res['error']}")
        finally:
            try:
                if pids or target is not None:
                    self.kill_tree(pids or [target.pid], [target, restorer])
            except RunError as e:
                res.setdefault("error", f"cleanup: {e.msg}")
            if restorer is not None and restorer.poll() is None:
                kill_group(restorer)
            reap_all_orphans()
            remove_path(os.path.join(self.args.dir, "crkit.img"))
            remove_path(os.path.join(self.args.dir, ".crkit.img.tmp"))
            remove_path(os.path.join(self.args.dir, "criu"))
            os.sync()
            time.sleep(self.args.settle)
        if "error" not in res:
            res["dump_gbps"] = sc["mib"] * MiB / res["dump_s"] / 1e9
            res["write_gbps"] = res["image_bytes"] / res["dump_s"] / 1e9
            log(f"    {tool}: dump {res['dump_s']:.3f} s, frozen {res['target_frozen_ms']:.1f} ms "
                f"(tool says {res.get('tool_frozen_ms', float('nan')):.1f}), restore "
                f"{res['restore_s']:.3f} s, image {res['image_bytes'] / MiB:.1f} MiB, "
                f"RSS {res['dump_peak_rss_mib']:.0f} MiB")
        return res

    def cleanup_all(self):
        for pid in list(self.live_pids):
            if is_memtarget(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(0.2)
        reap_all_orphans()
        remove_path(os.path.join(self.args.dir, "crkit.img"))
        remove_path(os.path.join(self.args.dir, ".crkit.img.tmp"))
        remove_path(os.path.join(self.args.dir, "criu"))


# ---------------------------------------------------------------------------------------------
# summaries

METRICS = ["dump_s", "target_frozen_ms", "tool_frozen_ms", "restore_s", "image_bytes",
           "dump_peak_rss_mib", "dump_gbps", "write_gbps"]


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    s = {"rounds_ok": len(ok), "rounds_failed": len(runs) - len(ok)}
    for m in METRICS:
        vals = [r[m] for r in ok if isinstance(r.get(m), (int, float))]
        s[m] = statistics.median(vals) if vals else None
    return s


def check_resources(args, sc):
    mem = meminfo()
    need_mem = sc["mib"] * MiB * 1.3 + GiB
    du = shutil.disk_usage(args.dir)
    need_disk = sc["mib"] * MiB * 1.1 + 2 * GiB
    if mem.get("MemAvailable", 0) < need_mem:
        return (f"not enough memory: {mem.get('MemAvailable', 0) / GiB:.1f} GiB available, "
                f"{need_mem / GiB:.1f} GiB needed")
    if du.free < need_disk:
        return (f"not enough disk in {args.dir}: {du.free / GiB:.1f} GiB free, "
                f"{need_disk / GiB:.1f} GiB needed")
    return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def f(v, fmt="{:.3f}", none="—"):
    return none if v is None else fmt.format(v)


def evaluate_targets(results, limits, quick):
    """The issue's targets, each with PASS/MISS and the margin."""
    sums = {name: s["summary"] for name, s in results["scenarios"].items() if "summary" in s}

    def get(name, tool, metric):
        return sums.get(name, {}).get(tool, {}).get(metric)

    def find(kind, size):
        """The scenario for a 1 GiB or 4 GiB target; in a quick run the 256 MiB one stands for
        1 GiB."""
        name = f"{kind}-{size}"
        if name in sums:
            return name, ""
        if size == "1g":
            for n in sums:
                if n.startswith(kind + "-") and results["scenarios"][n]["mib"] < 1024:
                    return n, f" ({n} stands in for 1 GiB)"
        return None, ""

    out = []

    def add(desc, scenario, value, limit, kind, unit=""):
        """kind 'le': value <= limit passes; 'ge': value >= limit passes."""
        t = {"target": desc, "scenario": scenario, "value": value, "limit": limit, "unit": unit}
        if value is None:
            t["status"] = "n/a"
            t["margin"] = "no data"
        else:
            passed = value <= limit if kind == "le" else value >= limit
            t["status"] = "PASS" if passed else "MISS"
            if limit:
                rel = (value - limit) / limit * 100
                if kind == "le":
                    t["margin"] = (f"{-rel:.0f}% under the limit" if passed
                                   else f"{rel:.0f}% over the limit")
                else:
                    t["margin"] = (f"{rel:.0f}% above the limit" if passed
                                   else f"{-rel:.0f}% short of the limit")
        out.append(t)

    for name in sums:
        mib = results["scenarios"][name]["mib"]
        fr = get(name, "crkit", "target_frozen_ms")
        add("frozen time (target-felt) <= 50 ms per GiB resident, default mode", name,
            None if fr is None else fr / (mib / 1024), 50.0, "le", "ms/GiB")
    for name in sums:
        add("frozen time >= 10x shorter than CRIU's", name,
            ratio(get(name, "criu", "target_frozen_ms"), get(name, "crkit", "target_frozen_ms")),
            10.0, "ge", "x")
    wb = limits.get("write_fsync_gbps")
    for size in ("1g", "4g"):
        name, note = find("random", size)
        if name is None:
            continue
        wr = get(name, "crkit", "write_gbps")
        add(f"dump {size.upper()}iB random >= 90% of the machine's write+fsync bandwidth" + note,
            name, None if wr is None or not wb else wr / wb * 100, 90.0, "ge", "%")
    name, note = find("random", "1g")
    if name:
        add("dump 1 GiB random not slower than CRIU (CRIU time / crkit time)" + note, name,
            ratio(get(name, "criu", "dump_s"), get(name, "crkit", "dump_s")), 1.0, "ge", "x")
        add("restore 1 GiB random not slower than CRIU (CRIU time / crkit time)" + note, name,
            ratio(get(name, "criu", "restore_s"), get(name, "crkit", "restore_s")), 1.0, "ge", "x")
    name, _ = find("random", "4g")
    if name:
        add("dump 4 GiB random >= 2x CRIU's speed", name,
            ratio(get(name, "criu", "dump_s"), get(name, "crkit", "dump_s")), 2.0, "ge", "x")
        add("restore 4 GiB random >= 1.5x CRIU's speed", name,
            ratio(get(name, "criu", "restore_s"), get(name, "crkit", "restore_s")), 1.5, "ge", "x")
    for name in sums:
        if results["scenarios"][name]["kind"] == "zero":
            ib = get(name, "crkit", "image_bytes")
            mib = results["scenarios"][name]["mib"]
            add("mostly-zero image <= 1% of resident size", name,
                None if ib is None else ib / (mib * MiB) * 100, 1.0, "le", "%")
    for name in sums:
        if results["scenarios"][name]["kind"] == "text":
            add("text image <= 1/3 of CRIU's (crkit size / CRIU size)", name,
                ratio(get(name, "crkit", "image_bytes"), get(name, "criu", "image_bytes")),
                1 / 3, "le", "")
    return out


def table_rows(results):
    rows = []
    for name, s in results["scenarios"].items():
        if "summary" not in s:
            rows.append([name, "—", "skipped: " + s.get("skipped", "?")] + [""] * 8)
            continue
        for tool in TOOLS:
            m = s["summary"][tool]
            fail = f" ({m['rounds_failed']} failed)" if m["rounds_failed"] else ""
            rows.append([name, tool + fail, f(m["dump_s"]), f(m["target_frozen_ms"], "{:.1f}"),
                         f(m["tool_frozen_ms"], "{:.1f}"), f(m["restore_s"]),
                         f(None if m["image_bytes"] is None else m["image_bytes"] / MiB, "{:.1f}"),
                         f(m["dump_peak_rss_mib"], "{:.0f}"), f(m["dump_gbps"], "{:.2f}"),
                         f(m["write_gbps"], "{:.2f}")])
        c, r = s["summary"]["crkit"], s["summary"]["criu"]
        rows.append([name, "crkit/CRIU", f(ratio(c["dump_s"], r["dump_s"]), "{:.2f}x"),
                     f(ratio(c["target_frozen_ms"], r["target_frozen_ms"]), "{:.3f}x"),
                     f(ratio(c["tool_frozen_ms"], r["tool_frozen_ms"]), "{:.3f}x"),
                     f(ratio(c["restore_s"], r["restore_s"]), "{:.2f}x"),
                     f(ratio(c["image_bytes"], r["image_bytes"]), "{:.3f}x"),
                     f(ratio(c["dump_peak_rss_mib"], r["dump_peak_rss_mib"]), "{:.2f}x"),
                     f(ratio(c["dump_gbps"], r["dump_gbps"]), "{:.2f}x"), ""])
    return rows


HEADER = ["scenario", "tool", "dump s", "frozen ms (target)", "frozen ms (tool)", "restore s",
          "image MiB", "dump RSS MiB", "dump GB/s", "write GB/s"]


def text_table(rows):
    w = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows)]
    line = "  ".join(h.ljust(w[i]) if i < 2 else h.rjust(w[i]) for i, h in enumerate(HEADER))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(x).ljust(w[i]) if i < 2 else str(x).rjust(w[i])
                             for i, x in enumerate(r)))
    return "\n".join(out)


def limits_lines(limits):
    return [f"write+fsync to the image directory: {f(limits.get('write_fsync_gbps'), '{:.2f}')} GB/s "
            f"(page cache, no fsync: {f(limits.get('write_nofsync_gbps'), '{:.2f}')} GB/s)",
            f"process_vm_readv: {f(limits.get('vm_readv_gbps'), '{:.2f}')} GB/s"]


def achieved_lines(results, limits):
    out = []
    wb = limits.get("write_fsync_gbps")
    for name, s in results["scenarios"].items():
        if "summary" not in s:
            continue
        parts = []
        for tool in TOOLS:
            w = s["summary"][tool]["write_gbps"]
            parts.append(f"{tool} {f(w, '{:.2f}')} GB/s written"
                         + (f" ({w / wb * 100:.0f}% of write+fsync)" if w and wb else ""))
        out.append(f"{name}: " + ", ".join(parts))
    return out


def target_lines(targets):
    out = []
    for t in targets:
        v = t["value"]
        vs = "—" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
        lim = f"{t['limit']:.3f}" if t["limit"] < 1 else f"{t['limit']:g}"
        out.append(f"{t['status']:4}  {t['target']} [{t['scenario']}]: {vs}{t['unit']} "
                   f"(limit {lim}{t['unit']}; {t['margin']})")
    return out


def markdown(results):
    m = results["machine"]
    out = [f"Run of {m['date']} on Linux {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}), "
           f"{m['mem_total_gib']:.0f} GiB; crkit {m['crkit_commit']}, {m['criu_version']}; "
           f"crkit options: `{m['crkit_options'] or '(default)'}`; rounds: {results['rounds']} "
           f"(medians); image directory on {m['image_fs']}.", ""]
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|")
    for r in table_rows(results):
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    out += ["", "Machine limits, measured in the same run:", ""]
    out += [f"- {x}" for x in limits_lines(results["limits"])]
    out += ["", "Achieved:", ""] + [f"- {x}" for x in achieved_lines(results, results["limits"])]
    out += ["", "Targets (issue 5):", ""]
    out += [f"- {x}" for x in target_lines(results["targets"])]
    errs = [(n, r) for n, s in results["scenarios"].items() for r in s.get("runs", [])
            if "error" in r]
    if errs:
        out += ["", "Errors:", ""]
        out += [f"- {n} round {r['round']} {r['tool']}: {r['error']}" for n, r in errs]
    return "\n".join(out) + "\n"


def write_svg(path, results):
    cats = [n for n, s in results["scenarios"].items() if "summary" in s]
    vals_dump = {t: {n: results["scenarios"][n]["summary"][t]["dump_s"] for n in cats}
                 for t in TOOLS}
    vals_frozen = {t: {n: results["scenarios"][n]["summary"][t]["target_frozen_ms"] for n in cats}
                   for t in TOOLS}
    vals_restore = {t: {n: results["scenarios"][n]["summary"][t]["restore_s"] for n in cats}
                    for t in TOOLS}
    m = results["machine"]
    svg_plot.grouped_bars_svg(
        path, "crkit vs CRIU: checkpoint of a running process", cats, list(TOOLS),
        [{"title": "dump time (incl. fsync)", "unit": "seconds", "values": vals_dump},
         {"title": "frozen time felt by the target", "unit": "milliseconds",
          "values": vals_frozen, "log": True},
         {"title": "restore time", "unit": "seconds", "values": vals_restore}],
        subtitle=f"Linux {m['kernel']}, {m['cpus']} CPUs, {m['criu_version']}, crkit "
                 f"{m['crkit_commit'][:12]}; medians of {results['rounds']} round(s)")


def machine_info(args, bench):
    def first_line(cmd):
        rc, out = run_text(cmd)
        return out.splitlines()[0] if rc == 0 and out else f"unknown ({out[:200]})"
    repo = args.repo
    rc, commit = run_text(["git", "-C", repo, "rev-parse", "HEAD"])
    rc2, dirty = run_text(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"])
    commit = (commit if rc == 0 else "unknown") + ("+dirty" if rc2 == 0 and dirty else "")
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs = "unknown"
    try:
        best = ""
        real = os.path.realpath(args.dir)
        with open("/proc/self/mounts") as fh:
            for line in fh:
                dev, mnt, typ = line.split()[:3]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fs = mnt, f"{typ} ({dev} at {mnt})"
    except OSError:
        pass
    def read(path):
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return None
    # Free page reporting (virtio-balloon): on such a VM, memory freed in the guest goes back to
    # the host and is slow to touch again; worth knowing when reading the numbers.
    reporting = None
    if os.path.isdir("/sys/module/page_reporting/parameters"):
        reporting = {n: read(os.path.join("/sys/module/page_reporting/parameters", n))
                     for n in sorted(os.listdir("/sys/module/page_reporting/parameters"))}
    balloon = None
    for d in (os.listdir("/sys/bus/virtio/devices") if os.path.isdir("/sys/bus/virtio/devices")
              else []):
        if read(f"/sys/bus/virtio/devices/{d}/device") == "0x0005":
            feats = read(f"/sys/bus/virtio/devices/{d}/features") or ""
            balloon = {"features": feats,
                       "free_page_reporting": len(feats) > 5 and feats[5] == "1"}
    return {
        "virtio_balloon": balloon,
        "page_reporting": reporting,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": meminfo().get("MemTotal", 0) / GiB,
        "hostname": platform.node(),
        "crkit_commit": commit,
        "crkit_bin": os.path.abspath(args.crkit_bin),
        "crkit_version": first_line([bench.cr_checkpoint, "--version"]),
        "crkit_options": " ".join(bench.crkit_opts),
        "crkit_restore_mode": bench.restore_mode,
        "criu": os.path.abspath(args.criu),
        "criu_version": first_line([args.criu, "--version"]).replace("Version: ", "CRIU "),
        "criu_options": args.criu_opts,
        "image_dir": os.path.abspath(args.dir),
        "image_fs": fs,
        "python": platform.python_version(),
        "thp": read("/sys/kernel/mm/transparent_hugepage/enabled"),
    }


# ---------------------------------------------------------------------------------------------

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crkit-bin", required=True, help="directory with cr_checkpoint, cr_restart")
    ap.add_argument("--criu", required=True, help="the criu binary (bench/build-criu.sh)")
    ap.add_argument("--memtarget", required=True)
    ap.add_argument("--vm-readv-bw", required=True)
    ap.add_argument("--dir", required=True, help="image directory (both tools)")
    ap.add_argument("--work", help="target files and logs (default: DIR/../crkit-bench-work)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--markdown", help="write the table as Markdown")
    ap.add_argument("--svg", help="write a bar plot")
    ap.add_argument("--scenarios", nargs="+", type=parse_scenario, metavar="NAME",
                    help=f"default: {' '.join(FULL_SCENARIOS)}; --quick: {' '.join(QUICK_SCENARIOS)}."
                         f" Any KIND-SIZE with KIND in {', '.join(KINDS)}")
    ap.add_argument("--quick", action="store_true", help="1 round, 256 MiB scenarios (smoke test)")
    ap.add_argument("--crkit-opts", default="", help="extra cr_checkpoint options")
    ap.add_argument("--criu-opts", default="", help="extra criu dump options")
    ap.add_argument("--criu-restore-opts", default="", help="extra criu restore options")
    ap.add_argument("--crkit-restore-mode", choices=["auto", "no-wait", "poll"], default="auto",
                    help="auto: cr_restart --no-wait when it has it, else run cr_restart in the "
                         "background and poll /proc until the restored tree runs")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before each restore (cold-cache restore)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait after each cleanup (sync, free-page reporting) so that "
                         "every run starts from the same state")
    ap.add_argument("--no-limits", action="store_true", help="skip the machine-limit measurements")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per dump or restore")
    ap.add_argument("--repo", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="crkit source tree (for the git commit)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("compare.py: must run as root (CRIU, and restoring original PIDs)")
    for p, what in ((os.path.join(args.crkit_bin, "cr_checkpoint"), "cr_checkpoint"),
                    (os.path.join(args.crkit_bin, "cr_restart"), "cr_restart"),
                    (args.criu, "criu"), (args.memtarget, "memtarget"),
                    (args.vm_readv_bw, "vm_readv_bw")):
        if not os.access(p, os.X_OK):
            sys.exit(f"compare.py: {what} not found or not executable: {p}")
    if args.quick:
        args.rounds = 1
    scenarios = args.scenarios or [parse_scenario(n) for n in
                                   (QUICK_SCENARIOS if args.quick else FULL_SCENARIOS)]
    os.makedirs(args.dir, exist_ok=True)
    args.dir = os.path.abspath(args.dir)
    if not args.work:
        args.work = os.path.join(os.path.dirname(args.dir), "crkit-bench-work")
    os.makedirs(args.work, exist_ok=True)

    set_child_subreaper()
    bench = Bench(args)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    results = {"rounds": args.rounds, "quick": args.quick, "scenarios": {}}
    try:
        results["machine"] = machine_info(args, bench)
        log(f"crkit {results['machine']['crkit_commit']} (restore mode: {bench.restore_mode}), "
            f"{results['machine']['criu_version']}, images in {args.dir} "
            f"[{results['machine']['image_fs']}]")
        results["limits"] = {} if args.no_limits else measure_limits(args, args.quick)
        for sc in scenarios:
            entry = dict(sc)
            results["scenarios"][sc["name"]] = entry
            why = check_resources(args, sc)
            if why:
                log(f"scenario {sc['name']}: skipped, {why}")
                entry["skipped"] = why
                continue
            log(f"scenario {sc['name']}: {sc['mib']} MiB {sc['pattern']}, {sc['threads']} extra "
                f"threads, {sc['procs']} process(es), {args.rounds} round(s)")
            runs = []
            for rnd in range(args.rounds):
                order = TOOLS if rnd % 2 == 0 else TOOLS[::-1]
                log(f"  round {rnd + 1}/{args.rounds}")
                for tool in order:
                    runs.append(bench.run_one(sc, rnd, tool))
            entry["runs"] = runs
            entry["summary"] = {t: summarize([r for r in runs if r["tool"] == t]) for t in TOOLS}
    except KeyboardInterrupt:
        log("interrupted: cleaning up, writing partial results")
        results["interrupted"] = True
    finally:
        bench.cleanup_all()

    results["targets"] = evaluate_targets(results, results.get("limits", {}), args.quick)
    with open(args.out + ".tmp", "w") as fh:
        json.dump(results, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(args.out + ".tmp", args.out)

    print(text_table(table_rows(results)))
    print("\nratios: crkit/CRIU of the medians (below 1 = crkit smaller/faster; for GB/s above 1 "
          "= crkit faster)")
    print("\nmachine limits (same run):")
    for x in limits_lines(results.get("limits", {})):
        print("  " + x)
    print("achieved:")
    for x in achieved_lines(results, results.get("limits", {})):
        print("  " + x)
    print("\ntargets:")
    for x in target_lines(results["targets"]):
        print("  " + x)
    if args.markdown and "machine" in results:
        with open(args.markdown, "w") as fh:
            fh.write(markdown(results))
    if args.svg and "machine" in results:
        write_svg(args.svg, results)
    log(f"results: {args.out}" + (f", {args.markdown}" if args.markdown else "")
        + (f", {args.svg}" if args.svg else ""))
    errors = sum(1 for s in results["scenarios"].values() for r in s.get("runs", [])
                 if "error" in r)
    return 1 if results.get("interrupted") else (2 if errors else 0)


if __name__ == "__main__":
    sys.exit(main())
