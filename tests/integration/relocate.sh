#!/usr/bin/env bash
# relocate.sh - cr_restart --no-restore-pid --relocate OLD=NEW restarts a copy of a job while
# the original still runs: the copy lives in a new PID namespace (it still sees its own PID)
# and its files are reopened under NEW; both finish with the complete sequence. Without
# --no-restore-pid the same restart is refused with exit 16 naming the PID.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin relocate
crt_need_root "new PID namespaces without a user namespace"

COUNTER=$(crt_example counter) || exit 1
mkdir -p "$T/a" "$T/b"
(cd "$T/a" && CRKIT_READY="$T/ready" exec "$COUNTER" out.txt 60 50 </dev/null >"$T/counter.log" 2>&1) &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_wait_lines "$T/a/out.txt" 5 "$pid"
crt_run checkpoint 60 "$CR_CHECKPOINT" -f "$T/job.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint (--run) of $pid"
cp "$T/a/out.txt" "$T/b/out.txt"

crt_run busy 60 "$CR_RESTART" "$T/job.img"
crt_expect_rc busy 16 "cr_restart while the original runs (PID in use)"
crt_expect_stderr busy "$pid" "the message names PID $pid"

crt_run copy 60 "$CR_RESTART" --no-restore-pid --relocate "$T/a=$T/b" "$T/job.img"
crt_expect_rc copy 0 "cr_restart --no-restore-pid --relocate $T/a=$T/b"
crt_reap "$pid" 0 "the original finishes normally"
crt_expect_seq "$T/a/out.txt" 60
crt_expect_seq "$T/b/out.txt" 60
crt_pass
