#!/usr/bin/env bash
# tool_options.sh - BLCR tool semantics beyond the basic checkpoint/restart:
#  - file policies: --noclobber refuses an existing file (EEXIST) and the target keeps
#    running; --backup keeps the old image as FILE.~1~; --clobber overwrites; the atomic
#    default leaves no .FILE.tmp behind;
#  - -F FD: the image streamed through a pipe into cr_restart -F 0;
#  - cr_checkpoint --term and --json;
#  - cr_restart mirrors the restarted process's exit status and fatal signal, forwards
#    signals to it, and runs --run-on-success / --run-on-fail-temp hooks.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin tool_options

COUNTER=$(crt_example counter) || exit 1
PY=$(command -v python3) || crt_skip "python3 is needed for the exit-status targets"

start_counter() { # OUT COUNT -> CPID
  rm -f "$T/ready"
  CRKIT_READY="$T/ready" "$COUNTER" "$1" "$2" 50 </dev/null >"$T/counter.log" 2>&1 &
  CPID=$!
  crt_wait_ready "$T/ready" "$CPID"
}

# --- file policies ---------------------------------------------------------------------------
start_counter "$T/a.txt" 60
pid=$CPID
echo old >"$T/keep.img"
crt_run noclobber 30 "$CR_CHECKPOINT" --noclobber -f "$T/keep.img" "$pid"
crt_expect_rc noclobber 17 "cr_checkpoint --noclobber onto an existing file (EEXIST)"
crt_check "the existing file is untouched and the target still runs"
[[ $(cat "$T/keep.img") == old ]] || crt_fail "keep.img was modified"
crt_alive "$pid" || crt_fail "process $pid died"

crt_run first 30 "$CR_CHECKPOINT" -f "$T/b.img" "$pid"
crt_expect_rc first 0 "first checkpoint to b.img"
first_sum=$(cksum <"$T/b.img")
crt_run backup 30 "$CR_CHECKPOINT" --backup -f "$T/b.img" "$pid"
crt_expect_rc backup 0 "cr_checkpoint --backup onto b.img"
crt_check "the previous image is kept as b.img.~1~ and no temporary file is left"
[[ -f $T/b.img.~1~ && $(cksum <"$T/b.img.~1~") == "$first_sum" ]] || crt_fail "b.img.~1~ is not the previous image"
compgen -G "$T/.b.img.tmp*" >/dev/null && crt_fail "a temporary .b.img.tmp* file was left behind"
crt_run clobber 30 "$CR_CHECKPOINT" --clobber -f "$T/b.img" "$pid"
crt_expect_rc clobber 0 "cr_checkpoint --clobber onto the read-only (0400) b.img"
crt_check_image "$T/b.img"

crt_run json 30 "$CR_CHECKPOINT" --json --term -f "$T/c.img" "$pid"
crt_expect_rc json 0 "cr_checkpoint --json --term"
crt_check "--json prints a summary naming the pid and image size"
python3 - "$pid" "$T/json.out" <<'PYEOF' || crt_fail "bad --json output: $(cat "$T/json.out")"
import json, sys
j = json.load(open(sys.argv[2]))
assert j["pid"] == int(sys.argv[1]) and j["image_bytes"] > 0 and j["frozen_seconds"] >= 0
PYEOF
crt_reap "$pid" 143 "--term ended the process with SIGTERM after the checkpoint"

# --- -F: through a pipe ----------------------------------------------------------------------
start_counter "$T/p.txt" 40
pid=$CPID
crt_wait_lines "$T/p.txt" 3 "$pid"
crt_log "run: cr_checkpoint --kill -F 1 $pid | cat > pipe.img"
{ "$CR_CHECKPOINT" --kill -F 1 "$pid" | cat >"$T/pipe.img"; } 2>"$T/pipe_ck.err" || crt_fail "cr_checkpoint -F 1 failed: $(cat "$T/pipe_ck.err")"
crt_reap "$pid" 137 "the checkpointed process was killed"
crt_log "run: cat pipe.img | cr_restart -F 0"
{ cat "$T/pipe.img" | timeout 60 "$CR_RESTART" -F 0 >"$T/pipe_rs.out" 2>"$T/pipe_rs.err"; } || crt_fail "cr_restart -F 0 failed: $(cat "$T/pipe_rs.err")"
crt_expect_seq "$T/p.txt" 40

# --- exit status, fatal signal, signal forwarding ----------------------------------------------
# py_target CODE: a Python process that waits for "go" and then ends as CODE says.
cat >"$T/target.py" <<'PYEOF'
import os, signal, sys, time
ready, go, got, how = sys.argv[1:5]
signal.signal(signal.SIGUSR1, lambda *a: open(got, "w").write("usr1\n"))
open(ready + ".tmp", "w").write(f"{os.getpid()}\n"); os.rename(ready + ".tmp", ready)
while not os.path.exists(go):
    time.sleep(0.02)
if how == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
sys.exit(int(how))
PYEOF
py_target() {
  rm -f "$T/ready" "$T/go"
  "$PY" "$T/target.py" "$T/ready" "$T/go" "$T/got_usr1" "$1" </dev/null >"$T/py.log" 2>&1 &
  CPID=$!
  crt_wait_ready "$T/ready" "$CPID"
}

py_target 7
pid=$CPID
crt_run ck_py 30 "$CR_CHECKPOINT" --kill -f "$T/py7.img" "$pid"
crt_expect_rc ck_py 0 "checkpoint of a Python interpreter"
crt_reap "$pid" 137 "the checkpointed interpreter was killed"
"$CR_RESTART" --run-on-success="touch $T/success_hook" "$T/py7.img" </dev/null >"$T/py7.out" 2>"$T/py7.err" &
rpid=$!
crt_wait_until 20 "the restarted interpreter $pid" crt_alive "$pid"
crt_check "a signal sent to cr_restart is forwarded to the restarted process"
kill -USR1 "$rpid"
crt_wait_until 10 "the forwarded SIGUSR1 to reach the process" test -f "$T/got_usr1"
touch "$T/go"
st=0
wait "$rpid" || st=$?
crt_check "cr_restart exits with the restarted process's status (7) and ran the success hook"
[[ $st -eq 7 ]] || { sed 's/^/    /' "$T/py7.err" >&2; crt_fail "cr_restart exited with $st, expected 7"; }
[[ -f $T/success_hook ]] || crt_fail "--run-on-success did not run"

py_target segv
pid=$CPID
crt_run ck_segv 30 "$CR_CHECKPOINT" --kill -f "$T/segv.img" "$pid"
crt_expect_rc ck_segv 0 "checkpoint of the second interpreter"
crt_reap "$pid" 137 "the checkpointed interpreter was killed"
touch "$T/go"
crt_run rs_segv 60 "$CR_RESTART" "$T/segv.img"
crt_expect_rc rs_segv 139 "cr_restart dies of the restarted process's SIGSEGV (128+11)"

# --- failure hook: PID in use is a temporary failure ------------------------------------------
start_counter "$T/h.txt" 60
pid=$CPID
crt_run ck_h 30 "$CR_CHECKPOINT" -f "$T/h.img" "$pid"
crt_expect_rc ck_h 0 "checkpoint (--run) of $pid"
crt_run busy 30 "$CR_RESTART" --run-on-fail-temp="exit 42" "$T/h.img"
crt_expect_rc busy 42 "cr_restart of a busy PID runs --run-on-fail-temp, whose status it returns"
kill "$pid"
crt_reap "$pid" 143 "cleanup"
# --- -t bounds freezing: a process parked in vfork() cannot stop ------------------------------
VF=$(crt_example vfork_parent) || exit 1
rm -f "$T/ready"
CRKIT_READY="$T/ready" "$VF" "$T/vf.txt" 6 </dev/null >"$T/vf.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
sleep 0.3
start=$SECONDS
crt_run vfork 30 "$CR_CHECKPOINT" -p -t 2 -f "$T/vf.img" "$pid"
crt_expect_rc vfork 110 "cr_checkpoint -t 2 of a process stuck in vfork() gives up (ETIMEDOUT)"
crt_check "it gave up within the limit, left no image and no tracer"
((SECONDS - start <= 5)) || crt_fail "cr_checkpoint took $((SECONDS - start)) s with -t 2"
[[ ! -e $T/vf.img ]] || crt_fail "an image was left"
[[ $(awk '/^TracerPid:/ { print $2 }' "/proc/$pid/status") == 0 ]] || crt_fail "process $pid is still traced"
crt_reap "$pid" 0 "the vfork parent finishes normally"
[[ $(cat "$T/vf.txt") == done ]] || crt_fail "vfork_parent wrote '$(cat "$T/vf.txt")'"
crt_pass
