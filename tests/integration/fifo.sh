#!/usr/bin/env bash
# fifo.sh - acceptance: a named FIFO between two processes of one tree. The job is
#   sh -c 'producer > FIFO & consumer < FIFO; wait for the producer'
# (3 processes; the producer is faster than the consumer, so the FIFO holds data).
#  1. cr_checkpoint --kill of the root sh: the image holds the 3 processes and the FIFO as fds
#     of kind "fifo" (one pipe_ino, a read and a write end) with buffered data; cr_restart
#     exits 0 and the output equals an uninterrupted run's exactly.
#  2. The same, but the FIFO's path is removed once both ends are open: the checkpoint still
#     saves it with its data, the restart recreates it (it comes back unlinked: nothing
#     appears at the old path) and the output again equals the uninterrupted run's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin fifo

crt_link_examples producer consumer
N=200    # lines
D1=15000 # producer: one line per 15 ms (3 s in all)
D3=25000 # consumer: 25 ms per line (5 s in all)
K=10     # the consumer is ready after K lines

# fifo_cmd FIFO OUTFILE: the sh -c script of the job; it fails if either process fails.
fifo_cmd() {
  # shellcheck disable=SC2016 # $! and $? are for sh
  printf '%q %d %d > %q & p=$!; %q %q %d %d < %q; c=$?; wait $p; w=$?; [ $c -eq 0 ] && [ $w -eq 0 ]' \
    "$BIN/producer" "$N" "$D1" "$1" "$BIN/consumer" "$2" "$D3" "$K" "$1"
}

mkfifo "$T/ref.fifo" || crt_fail "mkfifo failed"
crt_run reference 60 sh -c "$(fifo_cmd "$T/ref.fifo" "$T/reference.txt")"
crt_expect_rc reference 0 "uninterrupted producer > fifo, consumer < fifo"
[[ $(tail -n1 "$T/reference.txt") == "done $N $((N * (N + 1) / 2))" ]] ||
  crt_fail "unexpected reference output: $(tail -n1 "$T/reference.txt")"

# run_part TAG UNLINK: start the job on $T/TAG.fifo (removing the FIFO's path once both ends
# are open if UNLINK is 1), checkpoint it with --kill, check the image, restart it.
run_part() {
  local tag=$1 unlink=$2
  local fifo=$T/$tag.fifo out=$T/$tag.txt img=$T/$tag.img
  mkfifo "$fifo" || crt_fail "mkfifo $fifo failed"
  crt_log "start: sh -c 'producer $N $D1 > $tag.fifo & consumer $tag.txt $D3 $K < $tag.fifo; wait'"
  CRKIT_READY="$T/$tag.ready" sh -c "$(fifo_cmd "$fifo" "$out")" </dev/null >"$T/$tag.log" 2>&1 &
  local root=$!
  crt_wait_file "$T/$tag.ready" "$root"
  if [[ $unlink -eq 1 ]]; then
    rm -f -- "$fifo" || crt_fail "cannot remove $fifo"
    crt_log "removed $fifo (both ends are open: the consumer has read $K lines)"
  fi
  sleep 0.6 # the FIFO fills up
  local -a all=("$root")
  mapfile -t -O 1 all < <(crt_children "$root")
  crt_check "the tree is sh ($root) and its 2 children, all running"
  [[ ${#all[@]} -eq 3 ]] || crt_fail "expected 3 processes, found: ${all[*]}"
  local p
  for p in "${all[@]}"; do crt_alive "$p" || crt_fail "process $p has already exited (machine too slow?)"; done

  crt_run "$tag.checkpoint" 60 "$CR_CHECKPOINT" --kill -f "$img" "$root"
  crt_expect_rc "$tag.checkpoint" 0 "cr_checkpoint --kill -f $tag.img $root (the tree)"
  crt_reap "$root" 137 "the root sh was killed (SIGKILL)"
  for p in "${all[@]}"; do crt_expect_gone "$p" "process $p of the tree is gone"; done
  crt_wait_pids_free 20 "the killed processes to be reaped" "${all[@]}"
  local at
  at=$(crt_lines "$out")
  crt_log "$tag.txt had $at lines at the checkpoint"
  ((at < N)) || crt_fail "the consumer finished before it was checkpointed"

  crt_run "$tag.info" 30 "$CR_INFO" --json "$img"
  crt_expect_rc "$tag.info" 0 "cr_info --json $tag.img"
  crt_check "the image holds the 3 processes"
  local got want
  got=$(crt_image_pids "$T/$tag.info.out")
  want=$(printf '%s\n' "${all[@]}" | sort -n | xargs)
  [[ $got == "$want" ]] || crt_fail "the image holds the processes '$got', expected '$want'"
  crt_check "the image holds one FIFO (kind fifo) with a read end, a write end and buffered data"
  crt_image_fds "$T/$tag.info.out" pipe external-pipe fifo | sed 's/^/    /'
  local pipes ino bytes readers writers
  pipes=$(crt_image_pipes "$T/$tag.info.out" fifo)
  [[ $(grep -c . <<<"$pipes") -eq 1 ]] || crt_fail "expected 1 FIFO in the image, got: ${pipes:-none}"
  read -r ino bytes readers writers <<<"$pipes"
  if [[ ! $bytes =~ ^[0-9]+$ ]] || ((bytes == 0)); then
    crt_fail "the FIFO ($ino) has no buffered data in the image (buffered_bytes $bytes)"
  fi
  ((readers >= 1 && writers >= 1)) || crt_fail "the FIFO: $readers read ends and $writers write ends"

  crt_run "$tag.restart" 60 "$CR_RESTART" "$img"
  crt_expect_rc "$tag.restart" 0 "cr_restart $tag.img (waits for sh)"
  crt_expect_same "$out" "$T/reference.txt" "the restarted job's output equals the uninterrupted run's"
  for p in "${all[@]}"; do crt_expect_gone "$p" "no process is left at pid $p"; done
  if [[ $unlink -eq 1 ]]; then
    crt_check "the FIFO came back unlinked (nothing at $fifo)"
    [[ ! -e $fifo && ! -L $fifo ]] || crt_fail "$fifo exists after the restart: $(ls -l -- "$fifo")"
  fi
}

run_part named 0
run_part unlinked 1
crt_pass
