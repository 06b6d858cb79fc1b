#!/usr/bin/env bash
# tree_partial.sh - a restart of a process tree that fails half-way kills every process it
# created, says which process failed and why, and touches nothing of a job still running:
#  1. a child's PID is in use (the stages of a pipeline still run, only their parent sh is
#     gone): cr_restart exits 16 (EBUSY) naming that PID; no process of the restart is left,
#     and the running stages are unharmed: not traced, and they finish with their output
#     intact (the restart must not have truncated the file they are writing);
#  2. the last stage's working directory was removed: its stand-in fails after the stand-ins
#     of sh, producer and filter exist; cr_restart exits 2 (ENOENT) naming the directory, and
#     none of the image's PIDs is in use afterwards, nor any other process of the restart.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin tree_partial
crt_need_root "restoring the original PIDs of a process tree"

crt_link_examples producer filter consumer
N=150
mkdir -p "$T/cwd3"

# job OUTFILE: the pipeline; the consumer runs in $T/cwd3.
job() {
  printf '%q %d 15000 | %q 20000 | (cd %q && exec %q %q 25000 10)' "$BIN/producer" "$N" \
    "$BIN/filter" "$T/cwd3" "$BIN/consumer" "$1"
}

# start_job OUTFILE READY: starts the job; sets root and stages (the three children).
start_job() {
  CRKIT_READY="$2" sh -c "$(job "$1")" </dev/null >>"$T/job.log" 2>&1 &
  root=$!
  crt_wait_file "$2" "$root"
  stages=($(crt_children "$root"))
  crt_check "sh ($root) has 3 children (${stages[*]})"
  [[ ${#stages[@]} -eq 3 ]] || crt_fail "sh has ${#stages[@]} children"
}

# no_restart_left IMG WHAT: no process of the restart is left (stand-ins and helpers are
# copies of cr_restart: their command line names the image).
no_restart_left() {
  local left
  left=$(crt_pids_matching "$1")
  crt_check "$2"
  [[ -z $left ]] || crt_fail "$2: processes left: $left ($(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done))"
}

# --- 1. a child's PID is in use ------------------------------------------------------------------
start_job "$T/out1.txt" "$T/ready1"
crt_run checkpoint1 60 "$CR_CHECKPOINT" -f "$T/busy.img" "$root"
crt_expect_rc checkpoint1 0 "cr_checkpoint (--run) of the pipeline $root"
kill -KILL "$root"
crt_reap "$root" 137 "the root sh is killed (its three stages go on)"
crt_wait_pids_free 20 "sh ($root) to be reaped" "$root"
for p in "${stages[@]}"; do crt_alive "$p" || crt_fail "stage $p exited early"; done

crt_run restart1 60 "$CR_RESTART" "$T/busy.img"
crt_expect_rc restart1 16 "cr_restart while the stages still hold their PIDs"
crt_expect_stderr restart1 "process id (${stages[0]}|${stages[1]}|${stages[2]}) is in use" \
  "the message names a stage's PID as in use"
crt_log "message: $(head -n1 "$T/restart1.err")"
crt_wait_pids_free 10 "the stand-in of sh ($root) to be gone" "$root"
no_restart_left "$T/busy.img" "no process of the failed restart is left"
crt_check "the running stages are unharmed (not stopped, not traced)"
for p in "${stages[@]}"; do
  crt_alive "$p" || crt_fail "stage $p died"
  [[ $(crt_tracer "$p") == 0 ]] || crt_fail "stage $p is traced by $(crt_tracer "$p")"
  [[ $(crt_state "$p") != [Tt] ]] || crt_fail "stage $p is stopped"
done
crt_wait_until 60 "the stages to finish" crt_pids_free "${stages[@]}"
crt_check "the stages finished their work ($(tail -n1 "$T/out1.txt"))"
[[ $(tail -n1 "$T/out1.txt") == "done $N $((N * (N + 1) / 2))" ]] ||
  crt_fail "out1.txt ends with '$(tail -n1 "$T/out1.txt")'"

# --- 2. the consumer's working directory is gone ----------------------------------------------
start_job "$T/out2.txt" "$T/ready2"
all=("$root" "${stages[@]}")
crt_run checkpoint2 60 "$CR_CHECKPOINT" --kill -f "$T/nocwd.img" "$root"
crt_expect_rc checkpoint2 0 "cr_checkpoint --kill of the pipeline $root"
crt_reap "$root" 137 "the root sh was killed"
crt_wait_pids_free 20 "the killed pipeline to be reaped" "${all[@]}"
rmdir "$T/cwd3" || crt_fail "cannot remove $T/cwd3"

crt_run restart2 60 "$CR_RESTART" "$T/nocwd.img"
crt_expect_rc restart2 2 "cr_restart when the consumer's working directory is gone (ENOENT)"
crt_expect_stderr restart2 "process ${stages[2]}.*working directory $T/cwd3.*No such file" \
  "the message names the process, the directory and the reason"
crt_log "message: $(head -n1 "$T/restart2.err")"
crt_wait_pids_free 10 "every PID of the image to be free again" "${all[@]}"
no_restart_left "$T/nocwd.img" "no stand-in of the failed restart is left"
crt_pass
