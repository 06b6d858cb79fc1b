#!/usr/bin/env bash
# tree_multi.sh - one running process tree (sh -c 'producer | filter | consumer', 4 processes)
# is checkpointed three times with the default --run, a while apart: the tree keeps running
# and is intact after each checkpoint, and the images record a growing output file (cr_info
# --json: size_at_checkpoint of the consumer's output file, image 1 < image 2 < image 3).
# Then the original tree is killed and the tree is restarted from image 2 (the middle one):
# cr_restart exits 0 and the output equals an uninterrupted run's - the restart went on from
# image 2's state, its output file truncated back to image 2's size although the file had
# grown beyond image 3's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin tree_multi

crt_link_examples producer filter consumer
# Here the producer is the slowest stage: the filter and the consumer wait for input, blocked
# in read(), and all four processes live until the producer is done (about 6 s).
N=300
D1=20000
D2=10000
D3=10000
K=5

pipeline_cmd() { # OUTFILE
  printf '%q %d %d | %q %d | %q %q %d %d' "$BIN/producer" "$N" "$D1" "$BIN/filter" "$D2" \
    "$BIN/consumer" "$1" "$D3" "$K"
}

crt_run reference 60 sh -c "$(pipeline_cmd "$T/reference.txt")"
crt_expect_rc reference 0 "uninterrupted pipeline run"
[[ $(tail -n1 "$T/reference.txt") == "done $N $((N * (N + 1) / 2))" ]] ||
  crt_fail "unexpected reference output: $(tail -n1 "$T/reference.txt")"

crt_log "start: sh -c 'producer $N $D1 | filter $D2 | consumer out.txt $D3 $K'"
CRKIT_READY="$T/ready" sh -c "$(pipeline_cmd "$T/out.txt")" </dev/null >"$T/pipeline.log" 2>&1 &
root=$!
crt_wait_file "$T/ready" "$root"
all=("$root")
mapfile -t -O 1 all < <(crt_children "$root")
crt_log "tree: ${all[*]}"
[[ ${#all[@]} -eq 4 ]] || crt_fail "expected sh and 3 stages, found: ${all[*]}"

# tree_intact WHAT: all 4 processes run, none is stopped or traced.
tree_intact() {
  local p
  crt_check "the tree is intact $1"
  for p in "${all[@]}"; do
    crt_alive "$p" || crt_fail "process $p has exited $1 (machine too slow?)"
    [[ $(crt_state "$p") != [Tt] ]] || crt_fail "process $p is stopped (state $(crt_state "$p")) $1"
    [[ $(crt_tracer "$p") == 0 ]] || crt_fail "process $p is traced $1"
  done
}

declare -a size
for i in 1 2 3; do
  sleep 0.3
  tree_intact "before checkpoint $i"
  crt_run "checkpoint$i" 60 "$CR_CHECKPOINT" -f "$T/multi$i.img" "$root"
  crt_expect_rc "checkpoint$i" 0 "cr_checkpoint (--run) -f multi$i.img $root"
  tree_intact "after checkpoint $i"
  crt_log "out.txt has $(crt_lines "$T/out.txt") lines after checkpoint $i"
done
sleep 0.3
tree_intact "before it is killed"
kill -KILL "${all[@]}"
crt_reap "$root" 137 "the original root sh was killed"
crt_wait_pids_free 20 "the killed tree to be reaped" "${all[@]}"
killed_at=$(stat -c %s "$T/out.txt")
crt_log "out.txt is $killed_at bytes after the kill"

for i in 1 2 3; do
  crt_run "info$i" 30 "$CR_INFO" --json "$T/multi$i.img"
  crt_expect_rc "info$i" 0 "cr_info --json multi$i.img"
  got=$(crt_image_pids "$T/info$i.out")
  want=$(printf '%s\n' "${all[@]}" | sort -n | xargs)
  [[ $got == "$want" ]] || crt_fail "image $i holds the processes '$got', expected '$want'"
  size[i]=$(crt_json "$T/info$i.out" "[f['size_at_checkpoint'] for f in doc['fds'] if f.get('path') == '$T/out.txt']")
  [[ $(grep -c . <<<"${size[i]}") -eq 1 && ${size[i]} =~ ^[0-9]+$ ]] ||
    crt_fail "image $i: expected one fd of $T/out.txt with its size, got '${size[i]}'"
  crt_log "image $i: out.txt was ${size[i]} bytes"
done
crt_check "the output file grew between the checkpoints (${size[1]} < ${size[2]} < ${size[3]} bytes)"
((size[1] < size[2] && size[2] < size[3])) || crt_fail "sizes at checkpoint: ${size[*]}"
((killed_at >= size[3])) || crt_fail "out.txt has $killed_at bytes, less than at checkpoint 3"


crt_run restart 60 "$CR_RESTART" "$T/multi2.img"
crt_expect_rc restart 0 "cr_restart multi2.img (waits for sh)"
crt_expect_same "$T/out.txt" "$T/reference.txt" "the tree restarted from image 2 wrote the reference output"
for p in "${all[@]}"; do crt_expect_gone "$p" "no process is left at pid $p"; done
crt_pass
