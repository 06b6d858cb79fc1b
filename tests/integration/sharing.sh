#!/usr/bin/env bash
# sharing.sh - what is shared inside one process stays shared: a pipe with data in flight
# (both ends in the image), dup'd fds sharing one offset, an O_TMPFILE file, a memfd mapped
# twice, and a sparse 1 GiB shared anonymous region whose checkpoint must neither read nor
# allocate the whole region in the running original.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin sharing

PROG=$(crt_example sharing) || exit 1
mkdir -p "$T/ref_work" "$T/work"
crt_run reference 60 "$PROG" "$T/reference.txt" "$T/ref_work" 1
crt_expect_rc reference 0 "uninterrupted sharing run"
want=$(cat "$T/reference.txt")

CRKIT_READY="$T/ready" "$PROG" "$T/out.txt" "$T/work" 3 </dev/null >"$T/sharing.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/sharing.img" "$pid"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f sharing.img $pid"
crt_reap "$pid" 137 "the checkpointed process was killed (SIGKILL)"
size=$(stat -c %s "$T/sharing.img")
crt_check "the image of a 1 GiB sparse shared region stays small ($size bytes)"
((size < 16 * 1024 * 1024)) || crt_fail "image is $size bytes: the sparse region was saved in full"

crt_run restart 60 "$CR_RESTART" "$T/sharing.img"
crt_expect_rc restart 0 "cr_restart sharing.img (the program verifies the sharing itself)"
got=$(cat "$T/out.txt")
crt_check "the restarted process's result equals the uninterrupted run's"
[[ $got == "$want" ]] || crt_fail "output is '$got', expected '$want'"

# --run: the original keeps its pipe data and memory, and finishes by itself.
rm -f "$T/ready"
CRKIT_READY="$T/ready" "$PROG" "$T/out2.txt" "$T/work" 2 </dev/null >"$T/sharing2.log" 2>&1 &
pid=$!
crt_wait_ready "$T/ready" "$pid"
shm_before=$(awk '/^RssShmem:/ { print $2 }' "/proc/$pid/status")
crt_run checkpoint2 60 "$CR_CHECKPOINT" -f "$T/run.img" "$pid"
crt_expect_rc checkpoint2 0 "cr_checkpoint (--run) of $pid"
shm_after=$(awk '/^RssShmem:/ { print $2 }' "/proc/$pid/status")
crt_check "the checkpoint did not populate the original's shared memory ($shm_before kB -> $shm_after kB)"
((shm_after < shm_before + 1024)) || crt_fail "RssShmem grew from $shm_before kB to $shm_after kB"
crt_reap "$pid" 0 "the original finishes by itself (its pipe data untouched by the checkpoint)"
[[ $(cat "$T/out2.txt") == "$want" ]] || crt_fail "the original's output is '$(cat "$T/out2.txt")'"
crt_pass
