#!/usr/bin/env python3
"""Summarise the samples of coord_overhead.sh: table on stdout, OUT.json and OUT.md.

Samples directory (written by coord_overhead.sh), per rank count N and round R:
  nN-rR.reply.json     cr_snapshot --json output (the coordinator's reply)
  nN-rR.wall           "MICROSECONDS EXIT_STATUS" of the cr_snapshot client
  nN-rR.manifest.json  the committed manifest (image sizes)
  nN.job               "ITERATIONS NS_TO_10% LOAD1 LOAD5 LOAD15": ring_halo's iterations, the
                       time from starting cr_mpirun to rank 0's first progress line (10% of
                       the iterations) and /proc/loadavg when the snapshots began
Python 3 standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

MIB = 1024 * 1024


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def machine_info():
    cpu = "unknown"
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    m = re.search(r"^MemTotal:\s+(\d+)", read("/proc/meminfo") or "", re.M)
    if m:
        mem_kib = int(m.group(1))
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / MIB, 1),
        "debian": (read("/etc/debian_version") or "").strip(),
        "python": platform.python_version(),
    }


def git_commit(repo):
    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return commit, dirty


def median(xs):
    return statistics.median(xs) if xs else None


def sample(samples, n, r):
    base = os.path.join(samples, f"n{n}-r{r}")
    wall = (read(base + ".wall") or "").split()
    s = {"round": r, "ok": False}
    if len(wall) == 2:
        s["wall_ms"] = int(wall[0]) / 1000.0
        s["exit_status"] = int(wall[1])
    text = read(base + ".reply.json")
    try:
        reply = json.loads(text) if text else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        s["error"] = (read(base + ".err") or "no reply").strip().splitlines()[-1:] or ["no reply"]
        s["error"] = s["error"][0]
        return s
    s["reply"] = reply
    if not reply.get("ok") or s.get("exit_status", 1) != 0:
        s["error"] = reply.get("error", "cr_snapshot failed")
        return s
    s["ok"] = True
    for k in ("seq", "quiesce_ms", "dump_ms", "total_ms"):
        s[k] = reply.get(k)
    s["other_ms"] = s["total_ms"] - s["quiesce_ms"] - s["dump_ms"]
    s["quiesce_share"] = s["quiesce_ms"] / s["total_ms"] if s["total_ms"] else None
    s["dump_share"] = s["dump_ms"] / s["total_ms"] if s["total_ms"] else None
    try:
        man = json.loads(read(base + ".manifest.json") or "")
        sizes = [int(im["size"]) for im in man.get("images", [])]
    except (ValueError, KeyError, TypeError):
        sizes = []
    s["image_bytes"] = sizes
    s["image_mib_per_node"] = sum(sizes) / len(sizes) / MIB if sizes else None
    return s


def summarise(samples, n, rounds):
    ss = [sample(samples, n, r) for r in range(1, rounds + 1)]
    ok = [s for s in ss if s["ok"]]

    def col(k):
        return [s[k] for s in ok if s.get(k) is not None]

    q = col("quiesce_ms")
    job = (read(os.path.join(samples, f"n{n}.job")) or "").split()
    iterations = int(job[0]) if len(job) >= 2 else None
    ready_s = int(job[1]) / 1e9 if len(job) >= 2 else None
    summary = {
        "ranks": n,
        "nodes": n // 2,
        "ranks_per_node": 2,
        "snapshots": len(ss),
        "failed": len(ss) - len(ok),
        "iterations": iterations,
        # cr_mpirun start -> 10% of the iterations done, and what that makes per iteration
        # (start-up included): how much the 2 cores are oversubscribed
        "ready_s": ready_s,
        "ms_per_iteration_to_ready": (1000 * ready_s / max(1, iterations // 10)
                                      if ready_s is not None and iterations else None),
        "loadavg_at_start": " ".join(job[2:5]),
        "median": {k: median(col(k)) for k in ("quiesce_ms", "dump_ms", "total_ms", "other_ms",
                                               "wall_ms", "quiesce_share", "dump_share",
                                               "image_mib_per_node")},
        "min_quiesce_ms": min(q) if q else None,
        "max_quiesce_ms": max(q) if q else None,
        "samples": ss,
    }
    return summary


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(rows):
    head = ("| ranks | nodes | quiesce ms median | min | max | dump ms | total ms | quiesce/total "
            "| dump/total | client wall ms | image MiB/node | job ms/iter | failed |")
    lines = [head, "|" + "---:|" * 13]
    for s in rows:
        m = s["median"]
        lines.append(
            f"| {s['ranks']} | {s['nodes']} | {fmt(m['quiesce_ms'], '.1f')} "
            f"| {fmt(s['min_quiesce_ms'], '.1f')} | {fmt(s['max_quiesce_ms'], '.1f')} "
            f"| {fmt(m['dump_ms'], '.1f')} | {fmt(m['total_ms'], '.1f')} "
            f"| {fmt(None if m['quiesce_share'] is None else 100 * m['quiesce_share'], '.0f')}% "
            f"| {fmt(None if m['dump_share'] is None else 100 * m['dump_share'], '.0f')}% "
            f"| {fmt(m['wall_ms'], '.1f')} | {fmt(m['image_mib_per_node'], '.1f')} "
            f"| {fmt(s['ms_per_iteration_to_ready'], '.1f')} "
            f"| {s['failed']}/{s['snapshots']} |")
    return "\n".join(lines)


NOTES = """\
Columns: *quiesce* = the coordinator's `quiesce_ms`, the max over nodes of cr_checkpoint start
-> first freeze, i.e. the time the ranks spend in libcr callbacks (MPICH's Chandy-Lamport
marker wave drains the channels) before anything is frozen, with median, min and max over the
snapshots; *dump* = max over nodes of the rest of cr_checkpoint (freeze, capture, image write
and fsync, the ranks' continue callbacks); *total* = request -> committed manifest
(`total_ms`); the shares are medians of the per-snapshot ratios; *client wall* = wall time of
the `cr_snapshot --json` process (plus `ip netns exec`); *image MiB/node* = the node image's
file size (2 ranks per node); *job ms/iter* = ring_halo's time per iteration until the
snapshots began (start-up included): how far the ranks oversubscribe the machine's cores. The
rest of total (not quiesce, not dump) is the coordinator's fan-out, the agents starting
cr_checkpoint, hashing the images and the manifest commit."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", required=True, help="result files prefix: OUT.json, OUT.md")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--ranks", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--iterations", help="a number, or auto (40000/N)")
    ap.add_argument("--sleep-us", type=int)
    ap.add_argument("--pause", type=float)
    ap.add_argument("--bindir")
    ap.add_argument("--mpich")
    a = ap.parse_args()

    commit, dirty = git_commit(a.repo)
    rows = [summarise(a.samples, int(n), a.rounds) for n in a.ranks.split()]
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    mach = machine_info()
    result = {
        "benchmark": "coord_overhead",
        "date": when,
        "machine": mach,
        "crkit_commit": commit,
        "crkit_dirty": dirty,
        "bindir": a.bindir,
        "mpich": a.mpich,
        "workload": {"program": "ring_halo",
                     "iterations": "40000/N" if a.iterations == "auto" else a.iterations,
                     "sleep_us": a.sleep_us, "ranks_per_node": 2,
                     "nodes": "network namespaces on one machine (tests/mpi/netns.sh)"},
        "rounds": a.rounds,
        "pause_s": a.pause,
        "keep": 1,
        "results": rows,
    }
    tab = table(rows)
    md = (f"Run of {when} on Linux {mach['kernel']}, {mach['cpus']} CPUs ({mach['cpu_model']}), "
          f"{mach['memory_gib']} GiB; crkit {commit}{'+dirty' if dirty else ''}; "
          f"ring_halo {'40000/N' if a.iterations == 'auto' else a.iterations} iterations, "
          f"{a.sleep_us} us sleep each, 2 ranks per "
          f"namespace node; {a.rounds} snapshots per row, {a.pause} s apart (medians).\n\n"
          f"{tab}\n\n{NOTES}\n")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(a.out + ".md", "w", encoding="utf-8") as f:
        f.write(md)
    print(tab)
    print(f"\nwrote {a.out}.json and {a.out}.md")
    return 1 if any(s["failed"] == s["snapshots"] for s in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
