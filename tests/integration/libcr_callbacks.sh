#!/usr/bin/env bash
# libcr_callbacks.sh - acceptance: a libcr program (examples/libcr_callbacks: cr_init in the main
# thread and a worker, thread-context callbacks tc1 and tc2, signal-context callbacks sm1 and sm2
# in the main thread and sw1 in the worker, a critical section around every step of its work) is
# checkpointed from outside twice:
#   1. cr_checkpoint --run -p: the program goes on; every callback saw cr_checkpoint() return 0
#      and no restart info;
#   2. cr_checkpoint --kill (tree scope): the program is killed; cr_restart of the image exits 0
#      and the restarted copy finishes; every callback saw cr_checkpoint() return cr_restart's
#      pid, and cr_get_restart_info() gave requester = cr_restart's pid and src = the canonical
#      path of the image (it was named by a non-canonical path).
# Then the program's output: the work result equals an uninterrupted run's; at each checkpoint
# every callback ran once, in BLCR's order (the thread-context ones reach cr_checkpoint() first,
# last registered first, on libcr's own thread; then the signal-context ones of each thread, last
# registered first, on the registering thread; nothing returns from cr_checkpoint() before every
# callback has reached it; then each thread's callbacks finish in reverse nesting order); no
# callback started while a thread was inside a critical section; cr_status() was ACTIVE; and
# cr_get_checkpoint_info() gave requester = that cr_checkpoint's pid, target = the program's pid,
# the scope (PROC, then TREE), the signal (0, then SIGKILL) and dest = the canonical image path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin libcr_callbacks

PROG=$(crt_example libcr_callbacks) || exit 1
STEPS=100
INTERVAL_MS=30 # about 3 s

crt_run reference 60 "$PROG" "$T/reference.txt" "$STEPS" "$INTERVAL_MS"
crt_expect_rc reference 0 "uninterrupted libcr_callbacks run"
grep '^work ' "$T/reference.txt" >"$T/reference.work"
crt_check "the uninterrupted run has a work line and no callback events"
[[ -s $T/reference.work ]] || crt_fail "reference.txt has no work line: $(head -c 300 "$T/reference.txt")"
! grep -q '^event ' "$T/reference.txt" || crt_fail "callbacks ran in the uninterrupted run"

mkdir -p "$T/sub"
crt_log "start: libcr_callbacks out.txt $STEPS $INTERVAL_MS"
CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$STEPS" "$INTERVAL_MS" </dev/null >"$T/prog.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
sleep 0.5

# --- 1. --run, process scope ------------------------------------------------------------------
crt_bg ck1 "$CR_CHECKPOINT" --run -p -f "$T/sub/../cb1.img" "$pid"
ck1=$BGPID
crt_wait_bg "$ck1" ck1 0 "cr_checkpoint --run -p (pid $ck1)"
crt_check_image "$T/cb1.img"
crt_check "the program goes on after the --run checkpoint"
crt_alive "$pid" || crt_fail "process $pid is gone after cr_checkpoint --run"
sleep 0.5

# --- 2. --kill, tree scope, then restart ------------------------------------------------------
crt_bg ck2 "$CR_CHECKPOINT" --kill -f "$T/./cb2.img" "$pid"
ck2=$BGPID
crt_wait_bg "$ck2" ck2 0 "cr_checkpoint --kill (pid $ck2)"
crt_reap "$pid" 137 "the checkpointed program was killed (SIGKILL)"
crt_check_image "$T/cb2.img"
[[ ! -e $T/out.txt ]] || crt_fail "the program finished before the second checkpoint"

crt_bg restart "$CR_RESTART" "$T/sub/../cb2.img"
rst=$BGPID
crt_wait_bg "$rst" restart 0 "cr_restart cb2.img (pid $rst; waits for the restarted program)" 60
crt_expect_gone "$pid" "no process is left at pid $pid"

grep '^work ' "$T/out.txt" >"$T/out.work"
crt_expect_same "$T/out.work" "$T/reference.work" "the restarted run's work result equals the uninterrupted run's"

img1=$(realpath "$T/cb1.img")
img2=$(realpath "$T/cb2.img")
crt_check "callback events: each callback once per checkpoint, in BLCR's order, with the right return values and infos"
sed 's/^/    /' "$T/out.txt"
python3 - "$T/out.txt" "$pid" "$ck1" "$ck2" "$rst" "$img1" "$img2" "$STEPS" <<'PY' || crt_fail "the callback events are wrong (see above)"
import sys

path, prog, ck1, ck2, rst, img1, img2, steps = sys.argv[1:]
prog, ck1, ck2, rst, steps = int(prog), int(ck1), int(ck2), int(rst), int(steps)
errors = []

def err(msg):
    errors.append(msg)
    print("  ERROR: " + msg)

threads, events = {}, []
for line in open(path):
    words = line.split()
    if not words:
        continue
    kv = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if words[0] == "threads":
        threads = {k: int(v) for k, v in kv.items()}
    elif words[0] == "event":
        for k in list(kv):
            if k not in ("cb", "phase", "dest", "src"):
                kv[k] = int(kv[k])
        events.append(kv)

CBS = ["tc1", "tc2", "sm1", "sm2", "sw1"]
ckpts = {1: dict(requester=ck1, scope=0, signal=0, dest=img1, ret=0),
         2: dict(requester=ck2, scope=3, signal=9, dest=img2, ret=rst)}
ns = sorted({e["n"] for e in events})
if ns != [1, 2]:
    err(f"callback invocations {ns}, expected [1, 2] (two checkpoints)")
by = {(e["n"], e["cb"], e["phase"]): e for e in events}
for n in ns:
    for cb in CBS:
        for ph in ("pre", "post"):
            cnt = sum(1 for e in events if (e["n"], e["cb"], e["phase"]) == (n, cb, ph))
            if cnt != 1:
                err(f"checkpoint {n}: {cnt} '{ph}' events of {cb}, expected 1")
if errors:
    sys.exit(1)

seq = lambda n, cb, ph: by[(n, cb, ph)]["seq"]
last_seq_before = 0
for n in (1, 2):
    want = ckpts[n]
    pre = [by[(n, cb, "pre")] for cb in CBS]
    post = [by[(n, cb, "post")] for cb in CBS]
    if min(e["seq"] for e in pre) <= last_seq_before:
        err(f"checkpoint {n}: events overlap the previous checkpoint's")
    last_seq_before = max(e["seq"] for e in post)
    # Nothing returns from cr_checkpoint() before every callback has reached it.
    if max(e["seq"] for e in pre) > min(e["seq"] for e in post):
        err(f"checkpoint {n}: a callback returned from cr_checkpoint() before all had reached it")
    # Thread-context first, last registered first; then signal-context per thread, LIFO.
    if not seq(n, "tc2", "pre") < seq(n, "tc1", "pre"):
        err(f"checkpoint {n}: tc1 started before tc2 (thread-context callbacks must run LIFO)")
    first_sig = min(seq(n, cb, "pre") for cb in ("sm1", "sm2", "sw1"))
    if not seq(n, "tc1", "pre") < first_sig:
        err(f"checkpoint {n}: a signal-context callback started before the thread-context ones reached cr_checkpoint()")
    if not seq(n, "sm2", "pre") < seq(n, "sm1", "pre"):
        err(f"checkpoint {n}: sm1 started before sm2 (signal-context callbacks must run LIFO)")
    # Reverse nesting order on the way out.
    if not seq(n, "tc1", "post") < seq(n, "tc2", "post"):
        err(f"checkpoint {n}: tc2 finished before tc1 (inner callbacks return first)")
    if not seq(n, "sm1", "post") < seq(n, "sm2", "post"):
        err(f"checkpoint {n}: sm2 finished before sm1 (inner callbacks return first)")
    # Which thread ran what.
    tc_tids = {by[(n, cb, ph)]["tid"] for cb in ("tc1", "tc2") for ph in ("pre", "post")}
    if len(tc_tids) != 1 or tc_tids & {threads.get("main"), threads.get("worker")}:
        err(f"checkpoint {n}: thread-context callbacks ran in threads {tc_tids} (main {threads.get('main')}, worker {threads.get('worker')}), expected one libcr thread")
    for cb, th in (("sm1", "main"), ("sm2", "main"), ("sw1", "worker")):
        for ph in ("pre", "post"):
            if by[(n, cb, ph)]["tid"] != threads.get(th):
                err(f"checkpoint {n}: {cb} ({ph}) ran in thread {by[(n, cb, ph)]['tid']}, expected the {th} thread {threads.get(th)}")
    for e in pre:
        what = f"checkpoint {n}, {e['cb']} before cr_checkpoint()"
        if e["in_cs"]:
            err(f"{what}: a thread was inside a critical section")
        if e["status"] != 2:
            err(f"{what}: cr_status() = {e['status']}, expected CR_STATE_ACTIVE (2)")
        if e["info"] != 1:
            err(f"{what}: cr_get_checkpoint_info() returned NULL")
            continue
        got = dict(requester=e["requester"], target=e["target"], scope=e["scope"],
                   signal=e["signal"], dest=e.get("dest", ""))
        exp = dict(requester=want["requester"], target=prog, scope=want["scope"],
                   signal=want["signal"], dest=want["dest"])
        if got != exp:
            err(f"{what}: cr_get_checkpoint_info() = {got}, expected {exp}")
        if not 0 < e["main_step"] < steps:
            err(f"{what}: main_step {e['main_step']} is not in the middle of the run")
    for e in post:
        what = f"checkpoint {n}, {e['cb']} after cr_checkpoint()"
        if e["ret"] != want["ret"]:
            err(f"{what}: cr_checkpoint() returned {e['ret']}, expected {want['ret']}")
        if e["cinfo"]:
            err(f"{what}: cr_get_checkpoint_info() still answers")
        if n == 1 and e["rinfo"]:
            err(f"{what}: cr_get_restart_info() answers after a checkpoint that continued")
        if n == 2:
            if not e["rinfo"]:
                err(f"{what}: cr_get_restart_info() returned NULL after the restart")
            elif (e["requester"], e.get("src", "")) != (rst, img2):
                err(f"{what}: cr_get_restart_info() = requester {e['requester']} src '{e.get('src', '')}', expected {rst} '{img2}'")
if by[(1, "tc2", "pre")]["main_step"] >= by[(2, "tc2", "pre")]["main_step"]:
    err("the program made no progress between the two checkpoints")
sys.exit(1 if errors else 0)
PY
crt_pass
