#!/usr/bin/env bash
# pipeline.sh - acceptance: a process tree joined by pipes is checkpointed and restarted as a
# whole. The job is sh -c 'producer | filter | consumer' (4 processes: sh and its three
# children; the producer is the fastest stage, the consumer the slowest, so both pipes hold
# data). cr_checkpoint --kill of the root sh (-T, the default scope):
#  - exits 0; the image holds the 4 processes and 2 pipes, each with both ends in the image
#    and with buffered data (cr_info --json: pipe_ino, buffered_bytes > 0);
#  - all 4 original processes are gone.
# cr_restart of the image:
#  - once the restored consumer writes new output, every process has its original PID, the
#    three stages are the children of sh, sh is the child of cr_restart, none is traced;
#  - cr_restart exits 0 (sh's status) and the output equals an uninterrupted run's exactly
#    (the data that was in the pipes is neither lost nor repeated);
#  - the job's shared log (one open file with one offset, shared by the 4 processes) holds each
#    stage's "done" line exactly once.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin pipeline
crt_need_root "restoring the original PIDs of a process tree"

crt_link_examples producer filter consumer
N=200      # lines
D1=15000   # producer: one line per 15 ms (3 s in all)
D2=20000   # filter: 20 ms per line
D3=25000   # consumer: 25 ms per line (5 s in all)
K=10       # the consumer is ready after K lines

# pipeline_cmd OUTFILE: the sh -c script of the job.
pipeline_cmd() {
  printf '%q %d %d | %q %d | %q %q %d %d' "$BIN/producer" "$N" "$D1" "$BIN/filter" "$D2" \
    "$BIN/consumer" "$1" "$D3" "$K"
}

crt_run reference 60 sh -c "$(pipeline_cmd "$T/reference.txt")"
crt_expect_rc reference 0 "uninterrupted pipeline run"
crt_check "the reference output ends with 'done $N $((N * (N + 1) / 2))'"
[[ $(tail -n1 "$T/reference.txt") == "done $N $((N * (N + 1) / 2))" ]] ||
  crt_fail "unexpected reference output: $(tail -n1 "$T/reference.txt")"

crt_log "start: sh -c 'producer $N $D1 | filter $D2 | consumer out.txt $D3 $K'"
CRKIT_READY="$T/ready" sh -c "$(pipeline_cmd "$T/out.txt")" </dev/null >"$T/pipeline.log" 2>&1 &
root=$!
crt_wait_file "$T/ready" "$root"
sleep 0.8 # both pipes fill up

# Find the three stages (the children of sh) by name.
declare -A pid_of
for c in $(crt_children "$root"); do pid_of[$(crt_comm "$c")]=$c; done
crt_check "sh ($root) has the three stages as children, all running"
for s in producer filter consumer; do
  [[ -n ${pid_of[$s]:-} ]] || crt_fail "no $s among the children of $root: $(crt_children "$root" | tr '\n' ' ')"
  crt_alive "${pid_of[$s]}" || crt_fail "the $s (${pid_of[$s]}) has already exited (machine too slow?)"
done
[[ $(head -n1 "$T/ready") == "${pid_of[consumer]}" ]] ||
  crt_fail "the ready file names $(head -n1 "$T/ready"), not the consumer ${pid_of[consumer]}"
all=("$root" "${pid_of[producer]}" "${pid_of[filter]}" "${pid_of[consumer]}")
crt_log "tree: sh $root, producer ${pid_of[producer]}, filter ${pid_of[filter]}, consumer ${pid_of[consumer]}"

crt_run checkpoint 60 "$CR_CHECKPOINT" --kill -f "$T/pipeline.img" "$root"
crt_expect_rc checkpoint 0 "cr_checkpoint --kill -f pipeline.img $root (the tree)"
crt_reap "$root" 137 "the root sh was killed (SIGKILL)"
for p in "${all[@]}"; do crt_expect_gone "$p" "process $p of the tree is gone"; done
crt_wait_pids_free 20 "the killed stages to be reaped" "${all[@]}"
at=$(crt_lines "$T/out.txt")
crt_log "out.txt had $at lines at the checkpoint"
((at < N)) || crt_fail "the consumer finished before it was checkpointed"
crt_check_image "$T/pipeline.img"

crt_run info 30 "$CR_INFO" --json "$T/pipeline.img"
crt_expect_rc info 0 "cr_info --json pipeline.img"
crt_check "the image holds exactly the 4 processes of the tree"
got=$(crt_image_pids "$T/info.out")
want=$(printf '%s\n' "${all[@]}" | sort -n | xargs)
[[ $got == "$want" ]] || crt_fail "the image holds the processes '$got', expected '$want'"
crt_check "the image holds 2 pipes, each with both ends and with buffered data"
crt_image_fds "$T/info.out" pipe external-pipe fifo | sed 's/^/    /'
pipes=$(crt_image_pipes "$T/info.out" pipe)
[[ $(grep -c . <<<"$pipes") -eq 2 ]] || crt_fail "expected 2 pipes in the image, got: ${pipes:-none}"
while read -r ino bytes readers writers; do
  if [[ ! $bytes =~ ^[0-9]+$ ]] || ((bytes == 0)); then
    crt_fail "pipe $ino has no buffered data in the image (buffered_bytes $bytes)"
  fi
  ((readers >= 1 && writers >= 1)) ||
    crt_fail "pipe $ino: $readers read ends and $writers write ends in the image"
done <<<"$pipes"

crt_bg restart "$CR_RESTART" "$T/pipeline.img"
rpid=$BGPID
crt_wait_lines "$T/out.txt" $((at + 1)) "$rpid"
crt_check "the restored tree (after new output): original PIDs and parent links, nothing traced"
for p in "${all[@]}"; do
  crt_restored "$p" "$T/" || crt_fail "process $p is not restored and running (state '$(crt_state "$p")', tracer '$(crt_tracer "$p")')"
done
[[ $(crt_ppid "$root") == "$rpid" ]] || crt_fail "sh ($root) has parent $(crt_ppid "$root"), expected cr_restart ($rpid)"
for s in producer filter consumer; do
  p=${pid_of[$s]}
  [[ $(crt_comm "$p") == "$s" ]] || crt_fail "pid $p is '$(crt_comm "$p")', expected the $s"
  [[ $(crt_ppid "$p") == "$root" ]] || crt_fail "the $s ($p) has parent $(crt_ppid "$p"), expected sh ($root)"
done
kids=$(crt_children "$root" | xargs)
want=$(printf '%s\n' "${pid_of[producer]}" "${pid_of[filter]}" "${pid_of[consumer]}" | sort -n | xargs)
[[ $kids == "$want" ]] || crt_fail "sh's children are '$kids', expected '$want'"

crt_wait_bg "$rpid" restart 0 "cr_restart pipeline.img (waits for sh)"
crt_expect_same "$T/out.txt" "$T/reference.txt" "the restarted pipeline's output equals the uninterrupted run's"
for p in "${all[@]}"; do crt_expect_gone "$p" "no process is left at pid $p"; done
crt_check "the shared log holds each stage's 'done' line once (shared offset restored, log truncated back)"
for s in producer filter consumer; do
  n=$(grep -c "^$s: done" "$T/pipeline.log")
  [[ $n -eq 1 ]] || crt_fail "pipeline.log has $n '$s: done' lines, expected 1"
done
crt_pass
