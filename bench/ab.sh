#!/usr/bin/env bash
# Before/after timing of vitq binaries on one artifact: runs `BIN bench` of each binary in turn,
# REPS rounds (interleaved, because this machine's speed drifts), and prints each binary's median
# ms per batch. A running vitq-train is paused meanwhile and resumed after.
#   bench/ab.sh REPS MODEL BATCH ITERS BIN...
#   e.g. bench/ab.sh 5 /tmp/deit_s.w8a8.safetensors 8 10 /tmp/vitq-before build/release/tools/vitq
set -euo pipefail
(($# >= 5)) || { sed -n '2,6p' "$0" >&2; exit 2; }
reps=$1 model=$2 batch=$3 iters=$4
shift 4
trainer=$(pgrep -x vitq-train || true)
[[ -n $trainer ]] && kill -STOP $trainer
trap '[[ -n $trainer ]] && kill -CONT $trainer' EXIT
bins=("$@")
times=()
for _ in $(seq "$reps"); do
  for i in "${!bins[@]}"; do
    ms=$("${bins[$i]}" bench --model "$model" --batch "$batch" --iters "$iters" --warmup 2 |
         grep -o 'ms_per_batch=[0-9.]*' | cut -d= -f2)
    times[$i]+="$ms "
  done
done
for i in "${!bins[@]}"; do
  median=$(tr ' ' '\n' <<<"${times[$i]}" | grep . | sort -n |
           awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  echo "${bins[$i]}: median $median ms (runs: ${times[$i]% })"
done
