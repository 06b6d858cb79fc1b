#!/usr/bin/env bash
# compress.sh - cr_checkpoint --compress (fast checkpoints, issue 5). A generations run holds
# TEXT MiB of English-like text and ZERO MiB of resident zero pages besides its small
# generation regions. One run per mode (none, lz4, zstd, zstd:3 with --workers 1, and the
# default), each checkpointed with --kill and restarted:
#  - every image restarts and the program ends with exactly the output line of an
#    uninterrupted run (text hash, generations, zeros all checked by the program itself);
#  - the sizes are ordered sensibly: the uncompressed image holds the text but not the zero
#    region; lz4 and zstd store text several times smaller; zstd beats lz4 and zstd:3 beats
#    zstd:1;
#  - --json names the compression (default zstd:1) and the workers; stored_bytes equals
#    memory_bytes without compression and is a fraction of it with;
#  - cr_info names the codec of the page batches (text and --json);
#  - bad --compress values (gzip, zstd:0, zstd:20, zstd:x, empty) exit 255 (bad usage, as BLCR) with a
#    message naming the value, before anything is done: the target runs on untouched and no
#    image or temporary file is left.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crt_begin compress

PROG=$(crt_example generations) || exit 1
MB=1      # generation regions: array 1 MiB + 3 x 256 KiB (they hold one word value a page)
THREADS=2
TEXT=32   # MiB of text
ZERO=32   # MiB of zero pages
MIB=$((1024 * 1024))

# Passes for a run of about 2 s on this machine (the program must not finish before it is
# checkpointed; its restarted copy runs the rest).
crt_run calib 60 "$PROG" "$T/calib.txt" "$MB" "$THREADS" 4000
crt_expect_rc calib 0 "calibration run of generations"
calib_s=$(sed -n 's/^generations: done, [0-9]* passes in \([0-9.]*\) s.*/\1/p' "$T/calib.err")
[[ -n $calib_s ]] || crt_fail "no timing line in the calibration run's stderr: $(cat "$T/calib.err")"
PASSES=$(awk -v s="$calib_s" 'BEGIN { p = int(4000 * 2.0 / (s > 0 ? s : 0.001)); if (p < 4000) p = 4000; if (p > 400000) p = 400000; print p }')
crt_log "4000 passes took $calib_s s: $PASSES passes per run"

ARGS=("$MB" "$THREADS" "$PASSES" "$TEXT" "$ZERO")
crt_run reference 120 "$PROG" "$T/reference.txt" "${ARGS[@]}"
crt_expect_rc reference 0 "uninterrupted generations run"
crt_check "the reference output is the line the spec describes"
grep -Eqx "ok passes $PASSES array $MB threads $THREADS text $TEXT [0-9a-f]{16} zero $ZERO" "$T/reference.txt" ||
  crt_fail "unexpected reference output: '$(cat "$T/reference.txt")'"
grep -q ' text [0-9]* 0000000000000000 ' "$T/reference.txt" && crt_fail "the text hash is 0"

# start_run TAG: start generations writing $T/TAG.txt; wait until it is ready; sets PID.
start_run() {
  rm -f "$T/$1.ready"
  crt_log "start: generations $1.txt ${ARGS[*]}"
  CRKIT_READY="$T/$1.ready" "$PROG" "$T/$1.txt" "${ARGS[@]}" </dev/null >"$T/$1.log" 2>&1 &
  PID=$!
  crt_wait_ready "$T/$1.ready" "$PID" 60
}

# untouched PID WHAT: the process runs on as before: alive, not stopped, not traced, all its
# threads there, its output file still empty (it has not finished).
untouched() {
  local pid=$1 what=$2 st tracer n
  crt_check "$what: process $pid runs on untouched"
  crt_alive "$pid" || crt_fail "$what: process $pid is gone"
  st=$(crt_state "$pid")
  [[ -n $st && $st != [TtZX] ]] || crt_fail "$what: process $pid is in state '$st'"
  tracer=$(crt_tracer "$pid")
  [[ $tracer == 0 ]] || crt_fail "$what: process $pid is traced by $tracer"
  n=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 | wc -l)
  [[ $n -eq $((THREADS + 1)) ]] || crt_fail "$what: process $pid has $n threads, expected $((THREADS + 1))"
}

# no_image NAME: neither $T/NAME nor a temporary file for it exists.
no_image() {
  [[ ! -e $T/$1 ]] || crt_fail "$T/$1 was created"
  if compgen -G "$T/.$1.tmp*" >/dev/null; then crt_fail "a temporary file .$1.tmp* was left: $(ls -a "$T")"; fi
}

# --- bad values first, on the target of the "none" run ----------------------------------------
start_run none
pid=$PID
i=0
for v in gzip zstd:0 zstd:20 zstd:x ""; do
  i=$((i + 1))
  crt_run "bad$i" 30 "$CR_CHECKPOINT" --kill --compress="$v" -f "$T/bad.img" "$pid"
  crt_expect_rc "bad$i" 255 "cr_checkpoint --compress='$v' (bad usage)"
  crt_check "the message names the value: '--compress=$v:'"
  grep -qF -- "--compress=$v:" "$T/bad$i.err" || crt_fail "stderr does not name '--compress=$v': $(cat "$T/bad$i.err")"
  no_image bad.img
  untouched "$pid" "after --compress='$v'"
done
crt_check "the target has not finished (its output file is still empty)"
[[ ! -s $T/none.txt ]] || crt_fail "none.txt already holds '$(cat "$T/none.txt")'"

# --- one run per mode ---------------------------------------------------------------------
# checkpoint TAG MODE-OPTION...: checkpoint (--kill --json) the run $PID into TAG.img.
checkpoint() {
  local tag=$1
  shift
  crt_run "ck_$tag" 100 "$CR_CHECKPOINT" --kill --json "$@" -f "$T/$tag.img" "$PID"
  crt_expect_rc "ck_$tag" 0 "cr_checkpoint --kill --json $* -f $tag.img $PID"
  crt_reap "$PID" 137 "the checkpointed process was killed"
  crt_check_image "$T/$tag.img"
  crt_check "the target had not finished when it was checkpointed"
  [[ ! -s $T/$tag.txt ]] || crt_fail "$tag.txt already holds '$(cat "$T/$tag.txt")'"
}

PID=$pid
checkpoint none --compress=none
start_run lz4
checkpoint lz4 --compress=lz4
start_run zstd
checkpoint zstd --compress=zstd
start_run zstd3
checkpoint zstd3 --compress=zstd:3 --workers 1
start_run default
checkpoint default

# json TAG EXPR: EXPR evaluated on TAG's cr_checkpoint --json output.
json() { crt_json "$T/ck_$1.out" "$2"; }

declare -A SIZE CODEC=([none]=none [lz4]=lz4 [zstd]=zstd [zstd3]=zstd [default]=zstd)
declare -A NAME=([none]=none [lz4]=lz4 [zstd]=zstd [zstd3]=zstd:3 [default]=zstd:1)
for tag in none lz4 zstd zstd3 default; do
  SIZE[$tag]=$(stat -c %s "$T/$tag.img")
  mem=$(json "$tag" 'doc["memory_bytes"]')
  stored=$(json "$tag" 'doc["stored_bytes"]')
  crt_log "$tag: image ${SIZE[$tag]} bytes, memory $mem, stored $stored, $(json "$tag" 'doc["zero_pages_skipped"]') zero pages skipped, workers $(json "$tag" 'doc["workers"]')"
  crt_check "$tag: --json says compression '${NAME[$tag]}', image_bytes is the file's size, no snapshot (--kill)"
  [[ $(json "$tag" 'doc["compression"]') == "${NAME[$tag]}" ]] || crt_fail "compression is '$(json "$tag" 'doc["compression"]')'"
  [[ $(json "$tag" 'doc["image_bytes"]') == "${SIZE[$tag]}" ]] || crt_fail "image_bytes is $(json "$tag" 'doc["image_bytes"]'), the file has ${SIZE[$tag]}"
  [[ $(json "$tag" 'doc["cow"]') == False ]] || crt_fail "cow is $(json "$tag" 'doc["cow"]') with --kill"
  crt_check "$tag: the memory saved holds the text, the zero region was skipped"
  ((mem >= TEXT * MIB)) || crt_fail "memory_bytes $mem < $TEXT MiB of text"
  ((mem < (TEXT + ZERO / 2) * MIB)) || crt_fail "memory_bytes $mem: the $ZERO MiB zero region was saved"
  [[ $(json "$tag" "doc['zero_pages_skipped'] >= $ZERO * 256") == True ]] ||
    crt_fail "only $(json "$tag" 'doc["zero_pages_skipped"]') zero pages skipped, the zero region has $((ZERO * 256))"
  if [[ $tag == none ]]; then
    crt_check "none: stored_bytes == memory_bytes"
    ((stored == mem)) || crt_fail "stored_bytes $stored != memory_bytes $mem without compression"
  else
    crt_check "$tag: stored_bytes is less than half of memory_bytes (text and generations compress)"
    ((stored * 2 < mem)) || crt_fail "stored_bytes $stored, memory_bytes $mem"
  fi

  crt_run "info_$tag" 30 "$CR_INFO" "$T/$tag.img"
  crt_expect_rc "info_$tag" 0 "cr_info $tag.img"
  crt_check "cr_info names the compression: 'compression ${CODEC[$tag]} (N batches)'"
  grep -Eq "compression ${CODEC[$tag]} \([0-9]+ batches\)" "$T/info_$tag.out" ||
    crt_fail "cr_info $tag.img: $(grep -i compress "$T/info_$tag.out" || echo 'no compression line')"
  crt_run "infoj_$tag" 30 "$CR_INFO" --json "$T/$tag.img"
  crt_expect_rc "infoj_$tag" 0 "cr_info --json $tag.img"
  crt_check "cr_info --json: page_batches_by_compression holds ${CODEC[$tag]} batches (most of them)"
  got=$(crt_json "$T/infoj_$tag.out" 'sorted(doc["page_batches_by_compression"].items())' | xargs)
  crt_log "  page_batches_by_compression: $got"
  [[ $(crt_json "$T/infoj_$tag.out" "(lambda b: b.get('${CODEC[$tag]}', 0) * 2 > sum(b.values()) and set(b) <= {'${CODEC[$tag]}', 'none'})(doc['page_batches_by_compression'])") == True ]] ||
    crt_fail "page_batches_by_compression is '$got'"
done

crt_check "workers: --workers 1 is used and reported; the default uses at least one"
[[ $(json zstd3 'doc["workers"]') == 1 ]] || crt_fail "workers is $(json zstd3 'doc["workers"]') with --workers 1"
[[ $(json default 'doc["workers"] >= 1') == True ]] || crt_fail "workers is $(json default 'doc["workers"]')"

crt_check "sizes: none >= the text and < text + zero region; lz4 1.5x and zstd 2.5x smaller than none"
((SIZE[none] >= TEXT * MIB)) || crt_fail "the uncompressed image (${SIZE[none]}) is smaller than the text"
((SIZE[none] < (TEXT + 8) * MIB)) || crt_fail "the uncompressed image (${SIZE[none]}) holds the zero region (> $((TEXT + 8)) MiB)"
((SIZE[lz4] * 3 < SIZE[none] * 2)) || crt_fail "lz4 image ${SIZE[lz4]} vs none ${SIZE[none]}"
((SIZE[zstd] * 5 < SIZE[none] * 2)) || crt_fail "zstd image ${SIZE[zstd]} vs none ${SIZE[none]}"
((SIZE[default] * 5 < SIZE[none] * 2)) || crt_fail "default (zstd:1) image ${SIZE[default]} vs none ${SIZE[none]}"
crt_check "sizes: zstd < lz4, zstd:3 < zstd:1 (the default)"
((SIZE[zstd] < SIZE[lz4])) || crt_fail "zstd image ${SIZE[zstd]} is not smaller than lz4 ${SIZE[lz4]}"
((SIZE[zstd3] < SIZE[default])) || crt_fail "zstd:3 image ${SIZE[zstd3]} is not smaller than zstd:1 ${SIZE[default]}"

# --- every image restarts and the program finishes correctly ----------------------------------
for tag in none lz4 zstd zstd3 default; do
  pid=$(head -n1 "$T/$tag.ready")
  crt_wait_pids_free 20 "pid $pid to be free" "$pid"
  crt_run "rs_$tag" 120 "$CR_RESTART" "$T/$tag.img"
  crt_expect_rc "rs_$tag" 0 "cr_restart $tag.img"
  crt_expect_same "$T/$tag.txt" "$T/reference.txt" "$tag: the restarted run's output equals the reference"
  crt_expect_gone "$pid" "no process is left at pid $pid"
done
crt_pass
