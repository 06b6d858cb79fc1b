#!/usr/bin/env bash
# restore_options.sh - cr_restart's options for fast restarts (issue 5):
#  - --no-wait --json on a process tree (examples/workers: a parent and its workers): returns
#    at once with status 0 while the restored processes run on (not stopped, not traced);
#    its JSON names the root pid and every pid of the tree; the job then finishes by itself
#    with the output of an uninterrupted run;
#  - --json (waiting) on a multi-threaded generations image: pid, restored, pids, processes,
#    image_bytes, restore_seconds are right, and the restarted run ends correctly;
#  - --workers 1 and --workers 2: the same image restores and ends correctly with either;
#  - --no-wait --no-restore-pid, 12 times on one image: every copy, each in its own new PID
#    namespace, is still running after its cr_restart has exited (the namespace's init must
#    be released before cr_restart exits, or its parent-death signal kills the whole copy);
#  - --workers 0, 65, -1, abc, "" and 2x: a usage error (255, as the help says for bad usage)
#    naming the value, before anything is restored.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin restore_options

crt_link_examples workers generations sleeper
NW=3
ROUNDS=100 # 40 ms per round: about 4 s

# --- --no-wait --json on a process tree ----------------------------------------------------
crt_run reference 60 "$BIN/workers" "$T/reference.txt" "$NW" "$ROUNDS"
crt_expect_rc reference 0 "uninterrupted workers run"
[[ $(tail -n1 "$T/reference.txt") == "done $NW $ROUNDS" ]] ||
  crt_fail "unexpected reference output: $(tail -n1 "$T/reference.txt")"

crt_log "start: workers tree.txt $NW $ROUNDS"
CRKIT_READY="$T/tree.ready" "$BIN/workers" "$T/tree.txt" "$NW" "$ROUNDS" </dev/null >"$T/tree.log" 2>&1 &
ROOT=$!
crt_wait_ready "$T/tree.ready" "$ROOT"
WPIDS=()
for ((w = 0; w < NW; w++)); do WPIDS+=("$(crt_ready_value "$T/tree.ready" "worker$w")"); done
crt_log "parent $ROOT, workers ${WPIDS[*]}"
sleep 0.3
crt_run ck_tree 60 "$CR_CHECKPOINT" -T --kill -f "$T/tree.img" "$ROOT"
crt_expect_rc ck_tree 0 "cr_checkpoint -T --kill -f tree.img $ROOT"
crt_reap "$ROOT" 137 "the parent was killed"
crt_wait_pids_free 20 "the killed workers to be reaped" "${WPIDS[@]}"
crt_check_image "$T/tree.img"

t0=$EPOCHREALTIME
crt_run nowait 30 "$CR_RESTART" --no-wait --json "$T/tree.img"
t1=$EPOCHREALTIME
crt_expect_rc nowait 0 "cr_restart --no-wait --json tree.img"
# Right away: the job must still be running (about 3.5 s of rounds are left).
crt_check "cr_restart returned while the restored job runs (no 'done' line yet)"
grep -q '^done' "$T/tree.txt" 2>/dev/null && crt_fail "the job had already finished when cr_restart --no-wait returned"
crt_check "the restored parent and workers run on, released (not stopped, not traced)"
for p in "$ROOT" "${WPIDS[@]}"; do
  crt_restored "$p" "$BIN/workers" ||
    crt_fail "process $p: state '$(crt_state "$p")', tracer '$(crt_tracer "$p")', $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
done
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
crt_log "cr_restart --no-wait returned after $elapsed s"
crt_check "--json: pid and restored $ROOT, pids ${WPIDS[*]} and $ROOT, $((NW + 1)) processes, image_bytes, restore_seconds"
python3 - "$T/nowait.out" "$ROOT" "$(stat -c %s "$T/tree.img")" "$elapsed" "$ROOT" "${WPIDS[@]}" <<'PY' ||
import json, sys
path, root, size, elapsed = sys.argv[1:5]
want_pids = sorted(int(p) for p in sys.argv[5:])
j = json.load(open(path))
bad = []
if j["pid"] != int(root): bad.append(f"pid is {j['pid']}")
if j["restored"] != int(root): bad.append(f"restored is {j['restored']} (original pids are restored)")
if sorted(j["pids"]) != want_pids: bad.append(f"pids is {j['pids']}")
if j["processes"] != len(want_pids): bad.append(f"processes is {j['processes']}")
if j["in_new_pid_namespace"] is not False: bad.append("in a new PID namespace")
if j["image_bytes"] != int(size): bad.append(f"image_bytes is {j['image_bytes']}, the file has {size}")
if not 0 < j["restore_seconds"] <= float(elapsed) + 0.01: bad.append(f"restore_seconds is {j['restore_seconds']} (cr_restart took {elapsed} s)")
if bad:
    print("    " + "; ".join(bad))
    sys.exit(1)
PY
  crt_fail "bad cr_restart --json output: $(tr -d '\n' <"$T/nowait.out")"

# shellcheck disable=SC2317 # called through crt_wait_until
root_gone() { ! crt_alive "$ROOT"; }
crt_wait_until 60 "the restored job to finish on its own" root_gone
crt_expect_same "$T/tree.txt" "$T/reference.txt" "the restored job's output equals the uninterrupted run's"
for p in "${WPIDS[@]}"; do crt_expect_gone "$p" "worker $p has finished"; done

# --- a generations image: --json, --workers 1, --workers 2 -------------------------------------
ARGS=(16 2 0 16 16) # array MiB, threads, passes (set below), text MiB, zero MiB
crt_run calib 60 "$BIN/generations" "$T/calib.txt" 16 2 200
crt_expect_rc calib 0 "calibration run of generations"
calib_s=$(sed -n 's/^generations: done, [0-9]* passes in \([0-9.]*\) s.*/\1/p' "$T/calib.err")
[[ -n $calib_s ]] || crt_fail "no timing line in the calibration run's stderr: $(cat "$T/calib.err")"
ARGS[2]=$(awk -v s="$calib_s" 'BEGIN { p = int(200 * 2.5 / (s > 0 ? s : 0.001)); if (p < 500) p = 500; if (p > 100000) p = 100000; print p }')
crt_log "200 passes took $calib_s s: ${ARGS[2]} passes per run"
crt_run gen_ref 60 "$BIN/generations" "$T/gen_ref.txt" "${ARGS[@]}"
crt_expect_rc gen_ref 0 "uninterrupted generations run"
grep -Eqx "ok passes ${ARGS[2]} array 16 threads 2 text 16 [0-9a-f]{16} zero 16" "$T/gen_ref.txt" ||
  crt_fail "unexpected generations output: '$(cat "$T/gen_ref.txt")'"

crt_log "start: generations gen.txt ${ARGS[*]}"
CRKIT_READY="$T/gen.ready" "$BIN/generations" "$T/gen.txt" "${ARGS[@]}" </dev/null >"$T/gen.log" 2>&1 &
GPID=$!
crt_wait_ready "$T/gen.ready" "$GPID"
crt_run ck_gen 60 "$CR_CHECKPOINT" --kill -f "$T/gen.img" "$GPID"
crt_expect_rc ck_gen 0 "cr_checkpoint --kill -f gen.img $GPID"
crt_reap "$GPID" 137 "the checkpointed process was killed"
crt_check_image "$T/gen.img"
[[ ! -s $T/gen.txt ]] || crt_fail "the run had finished before the checkpoint: '$(cat "$T/gen.txt")'"

# restart_gen LABEL OPTION...: cr_restart OPTION... gen.img; the run must end correctly.
restart_gen() {
  local label=$1
  shift
  crt_wait_pids_free 20 "pid $GPID to be free" "$GPID"
  rm -f "$T/gen.txt"
  crt_run "$label" 100 "$CR_RESTART" "$@" "$T/gen.img"
  crt_expect_rc "$label" 0 "cr_restart $* gen.img"
  crt_expect_same "$T/gen.txt" "$T/gen_ref.txt" "cr_restart $*: the restarted run's output equals the uninterrupted run's"
  crt_expect_gone "$GPID" "no process is left at pid $GPID"
}

restart_gen rs_json --json
crt_check "--json: pid and restored $GPID, pids [$GPID], 1 process, image_bytes, restore_seconds"
[[ $(crt_json "$T/rs_json.out" "(doc['pid'], doc['restored'], doc['pids'], doc['processes'], doc['in_new_pid_namespace'])" | xargs) == "$GPID $GPID [$GPID] 1 False" ]] ||
  crt_fail "bad cr_restart --json output: $(tr -d '\n' <"$T/rs_json.out")"
[[ $(crt_json "$T/rs_json.out" "doc['image_bytes'] == $(stat -c %s "$T/gen.img") and 0 < doc['restore_seconds'] < 60") == True ]] ||
  crt_fail "bad image_bytes or restore_seconds: $(tr -d '\n' <"$T/rs_json.out")"
restart_gen rs_w1 --workers 1
restart_gen rs_w2 --workers 2
crt_check "without --json cr_restart prints nothing on stdout"
[[ ! -s $T/rs_w1.out && ! -s $T/rs_w2.out ]] || crt_fail "stdout: $(cat "$T/rs_w1.out" "$T/rs_w2.out")"

# --- --no-wait into new PID namespaces: the copies outlive cr_restart --------------------------
crt_log "start: sleeper ns.txt 60"
CRKIT_READY="$T/ns.ready" "$BIN/sleeper" "$T/ns.txt" 60 </dev/null >"$T/ns.log" 2>&1 &
SPID=$!
crt_wait_ready "$T/ns.ready" "$SPID"
crt_run ck_ns 60 "$CR_CHECKPOINT" --kill -f "$T/ns.img" "$SPID"
crt_expect_rc ck_ns 0 "cr_checkpoint --kill -f ns.img $SPID"
crt_reap "$SPID" 137 "the checkpointed sleeper was killed"
COPIES=()
# shellcheck disable=SC2317 # called by the EXIT trap's cleanup as well
kill_copies() { ((${#COPIES[@]})) && kill -9 "${COPIES[@]}" 2>/dev/null; return 0; }
crt_check "12 copies, each still running after its cr_restart exited"
for i in $(seq 1 12); do
  crt_run "ns$i" 30 "$CR_RESTART" --no-wait --no-restore-pid --json "$T/ns.img"
  crt_expect_rc "ns$i" 0 "cr_restart --no-wait --no-restore-pid ns.img (copy $i)"
  COPIES+=("$(crt_json "$T/ns$i.out" "doc['restored']")")
  sleep 0.2 # (a parent-death SIGKILL would have come at once)
  crt_alive "${COPIES[-1]}" || { kill_copies; crt_fail "copy $i (pid ${COPIES[-1]}) died when its cr_restart exited"; }
done
kill_copies

# --- bad --workers values ---------------------------------------------------------------------
i=0
for v in 0 65 -1 abc "" 2x; do
  i=$((i + 1))
  rm -f "$T/gen.txt"
  crt_run "badw$i" 30 "$CR_RESTART" --workers "$v" "$T/gen.img"
  crt_expect_rc "badw$i" 255 "cr_restart --workers '$v' (usage error)"
  crt_check "the message names the value, and nothing was restored"
  grep -qF -- "invalid number of workers '$v'" "$T/badw$i.err" ||
    crt_fail "stderr does not name '$v': $(head -n 2 "$T/badw$i.err")"
  crt_pids_free "$GPID" || crt_fail "a process has pid $GPID: $(tr '\0' ' ' <"/proc/$GPID/cmdline" 2>/dev/null)"
  [[ ! -e $T/gen.txt ]] || crt_fail "gen.txt was written"
done
crt_pass
