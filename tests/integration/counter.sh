#!/usr/bin/env bash
# counter.sh - acceptance: a counter that appends 1, 2, 3, ... to a file is checkpointed with
# --kill and restarted: the image is a mode-0400 file, the process is gone, cr_restart waits
# for the restarted process and exits 0, and the file continues with no gap and no repeat.
# Also checks that cr_info shows the image as text and as JSON.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin counter

COUNTER=$(crt_example counter) || exit 1
COUNT=40
INTERVAL_MS=100

crt_log "start: counter out.txt $COUNT $INTERVAL_MS"
CRKIT_READY="$T/ready" "$COUNTER" "$T/out.txt" "$COUNT" "$INTERVAL_MS" </dev/null >"$T/counter.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_wait_lines "$T/out.txt" 5 "$pid"

crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/counter.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f counter.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
at=$(crt_lines "$T/out.txt")
crt_log "out.txt had $at lines at the checkpoint"
((at < COUNT)) || crt_fail "the counter finished before it was checkpointed"
crt_check_image "$T/counter.img"

crt_run info 30 "$CR_INFO" "$T/counter.img"
crt_expect_rc info 0 "cr_info counter.img"
crt_check "cr_info's text output names process $pid"
grep -qw -- "$pid" "$T/info.out" || crt_fail "cr_info output does not mention $pid: $(head -c 600 "$T/info.out")"

crt_run info_json 30 "$CR_INFO" --json "$T/counter.img"
crt_expect_rc info_json 0 "cr_info --json counter.img"
crt_check "cr_info --json prints valid JSON that contains the pid $pid"
python3 -c 'import json, sys; json.load(sys.stdin)' <"$T/info_json.out" ||
  crt_fail "cr_info --json output is not valid JSON"
python3 - "$pid" "$T/info_json.out" <<'PY' || crt_fail "cr_info --json output does not contain the pid $pid"
import json, sys
pid = int(sys.argv[1])
with open(sys.argv[2]) as f:
    doc = json.load(f)
def has(x):
    if isinstance(x, dict):
        return any(has(v) for v in x.values())
    if isinstance(x, list):
        return any(has(v) for v in x)
    return isinstance(x, int) and not isinstance(x, bool) and x == pid
sys.exit(0 if has(doc) else 1)
PY

crt_run restart 60 "$CR_RESTART" "$T/counter.img"
crt_expect_rc restart 0 "cr_restart counter.img (waits for the restarted counter)"
crt_expect_seq "$T/out.txt" "$COUNT"
crt_expect_gone "$pid" "no process is left at pid $pid"
crt_check "the restarted counter reported success on its (restored) stderr"
grep -q "counter: done, wrote 1..$COUNT" "$T/counter.log" || crt_fail "counter.log has no 'done' line"
crt_pass
