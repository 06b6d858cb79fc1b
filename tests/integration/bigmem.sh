#!/usr/bin/env bash
# bigmem.sh - acceptance: 512 MiB of pseudo-random data held in memory survive a checkpoint
# with --kill and a restart (the program re-verifies its checksum, and it must equal the one
# it computed before the checkpoint). CRKIT_BIGMEM_MB overrides the size.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin bigmem

PROG=$(crt_example bigmem) || exit 1
MB=${CRKIT_BIGMEM_MB:-512}

crt_log "start: bigmem out.txt $MB 4"
CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$MB" 4 </dev/null >"$T/bigmem.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid" 90
sum=$(sed -n 's/^checksum \([0-9a-f]\{16\}\)$/\1/p' "$T/ready")
[[ -n $sum ]] || crt_fail "the ready file has no checksum line: $(cat "$T/ready")"
crt_log "checksum before the checkpoint: $sum"

start=$SECONDS
crt_run checkpoint 100 "$CR_CHECKPOINT" --kill -f "$T/bigmem.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f bigmem.img $pid"
crt_log "checkpoint took about $((SECONDS - start)) s"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
crt_check_image "$T/bigmem.img"
crt_check "the image is at least $MB MiB (random data cannot be skipped or compressed)"
size=$(stat -c %s "$T/bigmem.img")
((size >= MB * 1024 * 1024)) || crt_fail "image is only $size bytes"

start=$SECONDS
crt_run restart 100 "$CR_RESTART" "$T/bigmem.img"
crt_expect_rc restart 0 "cr_restart bigmem.img"
crt_log "restart and the rest of the run took about $((SECONDS - start)) s"
got=$(cat "$T/out.txt")
crt_check "the restarted process verified its memory: output is 'ok $MB $sum'"
[[ $got == "ok $MB $sum" ]] || crt_fail "output is '$got', expected 'ok $MB $sum'"
crt_expect_gone "$pid" "no process is left at pid $pid"
crt_pass
