#!/usr/bin/env bash
# Side-by-side throughput of vitq and its peers (ONNX Runtime 1.30, PyTorch 1.13) on the same
# machine in one run, interleaved per repetition because this machine's speed drifts.
#   bench/compare_peers.sh [REPS]        (default 3; needs a release build and ../shared/peers/setup.sh)
# Prints every raw line, then per config the median over repetitions and vitq's ratio to the
# ORT fp32 figure of the same model and batch.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-3}"
PEERS="$(cd ../shared/peers && pwd)"
VITQ=build/release/tools/vitq
OUT=$(mktemp)
export OMP_NUM_THREADS=2
for rep in $(seq "$REPS"); do
  echo "# repetition $rep/$REPS" >&2
  for m in deit_s swin_t; do
    preset=$([[ $m == deit_s ]] && echo deit_small || echo swin_tiny)
    (cd "$PEERS" && node bench.js --models "$m" --precs fp32 --bs 1,8 2>/dev/null) | tee -a "$OUT"
    (cd "$PEERS" && OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench_torch.py \
       --models "$m" --precs fp32 --bs 1,8 2>/dev/null) | tee -a "$OUT"
    for p in fp32 bf16; do
      for b in 1 8; do
        "$VITQ" bench --model "$preset" --precision "$p" --batch "$b" --iters 10 |
          sed "s/model=$preset/model=$m/; s/^engine=vitq/peer=vitq/" | tee -a "$OUT"
      done
    done
  done
done
echo
echo "| model | bs | engine | prec | median ms/batch | img/s | × ORT fp32 |"
echo "|---|---|---|---|---|---|---|"
/usr/bin/python3 - "$OUT" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=([^\s]+)", line))
    if "ms_per_batch" not in kv:
        continue
    key = (kv["model"], int(kv["bs"]), kv["peer"], kv["prec"])
    rows.setdefault(key, []).append(float(kv["ms_per_batch"]))
for key in sorted(rows):
    model, bs, peer, prec = key
    ms = statistics.median(rows[key])
    ort = rows.get((model, bs, "ort-1.30", "fp32"))
    ratio = "%.2f" % (statistics.median(ort) / ms) if ort else "-"
    print("| %s | %d | %s | %s | %.1f | %.1f | %s |" % (model, bs, peer, prec, ms, bs * 1000 / ms, ratio))
PY
rm -f "$OUT"
