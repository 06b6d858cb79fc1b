#!/usr/bin/env bash
# cow.sh - copy-on-write checkpoints (fast checkpoints, issue 5). A generations run whose
# threads rewrite ARRAY MiB (plus its MAP_SHARED, MADV_WIPEONFORK and MADV_DONTFORK regions)
# as fast as they can, in lock-step generations, besides constant text and zero regions:
#  - several checkpoints while it runs, with the default (the target continues, so --cow is
#    implied), an explicit --cow --workers 1, and --no-cow: each exits 0; --json says cow
#    true (false for --no-cow), the frozen time of a snapshot is short (< 1 s), and the
#    target runs on (not stopped, not traced, all threads) and in the end finishes with the
#    output line of the spec;
#  - then each image is restarted in turn (the original is gone: the PIDs are reused): every
#    restarted copy passes all the program's checks (each page holds the generation of one
#    single moment: a torn snapshot, or a lost shared/wipe-on-fork/dont-fork region, fails)
#    and ends with the same output line as the original;
#  - --cow with --kill exits 22 (EINVAL) before touching the target and leaves no image.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin cow

PROG=$(crt_example generations) || exit 1
ARRAY=64 # MiB rewritten in every pass (+ 3 x ARRAY/16 MiB shared, wipeonfork, dontfork)
THREADS=2
TEXT=8
ZERO=8
MIB=$((1024 * 1024))

# Passes for a run of about 5 s on this machine (each restarted copy runs the rest of it).
crt_run calib 60 "$PROG" "$T/calib.txt" "$ARRAY" "$THREADS" 100
crt_expect_rc calib 0 "calibration run of generations"
calib_s=$(sed -n 's/^generations: done, [0-9]* passes in \([0-9.]*\) s.*/\1/p' "$T/calib.err")
[[ -n $calib_s ]] || crt_fail "no timing line in the calibration run's stderr: $(cat "$T/calib.err")"
PASSES=$(awk -v s="$calib_s" 'BEGIN { p = int(100 * 5.0 / (s > 0 ? s : 0.001)); if (p < 200) p = 200; if (p > 20000) p = 20000; print p }')
crt_log "100 passes took $calib_s s: $PASSES passes for the run"
WANT_RE="ok passes $PASSES array $ARRAY threads $THREADS text $TEXT [0-9a-f]{16} zero $ZERO"

crt_log "start: generations out.txt $ARRAY $THREADS $PASSES $TEXT $ZERO"
CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$ARRAY" "$THREADS" "$PASSES" "$TEXT" "$ZERO" \
  </dev/null >"$T/generations.log" 2>&1 &
pid=$!
run_start=$SECONDS
crt_wait_ready "$T/ready" "$pid" 60
TIDS=()
for ((t = 0; t < THREADS; t++)); do TIDS+=("$(crt_ready_value "$T/ready" "tid$t")"); done
crt_log "threads ${TIDS[*]}"

# running WHAT: the target runs on: alive, not stopped, not traced, every thread there, not
# finished yet.
running() {
  local st tracer tid
  crt_check "$1: process $pid runs on (not stopped, not traced, all threads, not finished)"
  [[ ! -s $T/out.txt ]] || crt_fail "$1: the run has already finished: '$(cat "$T/out.txt")' (too few passes?)"
  crt_alive "$pid" || crt_fail "$1: process $pid is gone"
  st=$(crt_state "$pid")
  [[ -n $st && $st != [TtZX] ]] || crt_fail "$1: process $pid is in state '$st'"
  tracer=$(crt_tracer "$pid")
  [[ $tracer == 0 ]] || crt_fail "$1: process $pid is traced by $tracer"
  for tid in "${TIDS[@]}"; do
    [[ -d /proc/$pid/task/$tid ]] || crt_fail "$1: thread $tid of process $pid is gone"
    st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/task/$tid/stat" 2>/dev/null)
    [[ -n $st && $st != [TtZX] ]] || crt_fail "$1: thread $tid is in state '$st'"
  done
}

# cputicks PID: user + system CPU ticks of PID (all threads).
cputicks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# checkpoint TAG OPTION...: a checkpoint (--json) of the running target into TAG.img. Only
# cheap checks here (the threads keep both CPUs busy: the run must not end before the last
# checkpoint); the JSON summaries are checked afterwards.
IMAGES=()
checkpoint() {
  local tag=$1
  shift
  crt_run "ck_$tag" 60 "$CR_CHECKPOINT" --json "$@" -f "$T/$tag.img" "$pid"
  crt_expect_rc "ck_$tag" 0 "cr_checkpoint --json $* -f $tag.img $pid"
  crt_check_image "$T/$tag.img"
  IMAGES+=("$tag")
  running "after checkpoint $tag"
}

# check_json TAG COW WORKERS: TAG's --json summary: the image of the target with all its
# threads and regions, compression zstd:1 (the default), cow COW (True/False); with a
# snapshot, frozen for less than 1 s; WORKERS workers (or any number if "any").
check_json() {
  local frozen=""
  [[ $2 == True ]] && frozen=", frozen < 1 s"
  crt_check "$1: --json: cow $2$frozen, workers $3, the process with its $((THREADS + 1)) threads and all its regions"
  python3 - "$T/ck_$1.out" "$2" "$3" "$pid" "$((THREADS + 1))" "$(((ARRAY + 3 * ARRAY / 16 + TEXT) * MIB))" <<'PY' ||
import json, sys
path, cow, workers, pid, threads, min_mem = sys.argv[1:]
j = json.load(open(path))
print(f"    cow {j['cow']}, frozen {j['frozen_seconds']:.3f} s (+ reap {j['snapshot_reap_seconds']:.4f} s), "
      f"total {j['total_seconds']:.3f} s, memory {j['memory_bytes']}, stored {j['stored_bytes']}, "
      f"workers {j['workers']}")
bad = []
if str(j["cow"]) != cow: bad.append(f"cow is {j['cow']}")
if workers != "any" and j["workers"] != int(workers): bad.append(f"workers is {j['workers']}")
if j["workers"] < 1: bad.append(f"workers is {j['workers']}")
if j["pids"] != [int(pid)]: bad.append(f"pids is {j['pids']}")
if j["threads"] != int(threads): bad.append(f"threads is {j['threads']}")
if j["memory_bytes"] < int(min_mem): bad.append(f"memory_bytes {j['memory_bytes']} < {min_mem}")
if not 0 < j["stored_bytes"] < j["memory_bytes"]: bad.append(f"stored_bytes is {j['stored_bytes']}")
if j["compression"] != "zstd:1": bad.append(f"compression is {j['compression']}, the default is zstd:1")
if not j["frozen_seconds"] > 0: bad.append(f"frozen_seconds is {j['frozen_seconds']}")
if cow == "True" and not j["frozen_seconds"] < 1.0: bad.append(f"frozen for {j['frozen_seconds']} s with a snapshot")
if cow == "False" and j["snapshot_reap_seconds"] != 0: bad.append("snapshot_reap_seconds without a snapshot")
if bad:
    print("    " + "; ".join(bad))
    sys.exit(1)
PY
    crt_fail "$1: bad --json summary (above): $(tr -d '\n' <"$T/ck_$1.out")"
}

# --- while it runs ----------------------------------------------------------------------------
crt_run cowkill 30 "$CR_CHECKPOINT" --cow --kill -f "$T/cowkill.img" "$pid"
crt_expect_rc cowkill 22 "cr_checkpoint --cow --kill (EINVAL)"
crt_expect_stderr cowkill '--cow' "the message names --cow"
crt_check "no image and no temporary file are left"
[[ ! -e $T/cowkill.img ]] || crt_fail "cowkill.img was created"
compgen -G "$T/.cowkill.img.tmp*" >/dev/null && crt_fail "a temporary file was left: $(ls -a "$T")"
running "after --cow --kill"

ticks0=$(cputicks "$pid")
for n in 1 2; do
  checkpoint "cow$n" # the default: the target continues, so a snapshot
  sleep 0.2
done
checkpoint explicit --cow --workers 1
checkpoint nocow --no-cow
crt_check "the target kept computing during the checkpoints"
(($(cputicks "$pid") > ticks0)) || crt_fail "process $pid used no CPU time since the first checkpoint"

crt_reap "$pid" 0 "the original finishes (exit 0) after the checkpoints"
crt_log "the original ran for about $((SECONDS - run_start)) s"
crt_check "the original's output is the line of the spec"
grep -Eqx "$WANT_RE" "$T/out.txt" || crt_fail "out.txt: '$(cat "$T/out.txt")' (stderr: $(tail -n 3 "$T/generations.log"))"
cp "$T/out.txt" "$T/original.txt"

for n in 1 2; do check_json "cow$n" True any; done
check_json explicit True 1
check_json nocow False any

# --- each image restarts and passes every check -----------------------------------------------
for tag in "${IMAGES[@]}"; do
  crt_wait_pids_free 20 "pid $pid to be free" "$pid" "${TIDS[@]}"
  rm -f "$T/out.txt"
  start=$SECONDS
  crt_run "rs_$tag" 100 "$CR_RESTART" "$T/$tag.img"
  crt_log "the restarted copy ran for about $((SECONDS - start)) s"
  if [[ $RC -ne 0 ]]; then
    crt_log "generations.log (the restarted copy's stderr): $(tail -n 3 "$T/generations.log")"
  fi
  crt_expect_rc "rs_$tag" 0 "cr_restart $tag.img (the restarted copy passed all its checks)"
  crt_expect_same "$T/out.txt" "$T/original.txt" "$tag: the restarted copy's output equals the original's"
  crt_expect_gone "$pid" "no process is left at pid $pid"
done
crt_pass
