#!/usr/bin/env bash
# Side-by-side throughput of vitq and its peers (ONNX Runtime 1.30, PyTorch 1.13) on the same
# machine in one run, interleaved per repetition because this machine's speed drifts.
#   bench/compare_peers.sh [REPS]        (default 3; needs a release build and ../shared/peers/setup.sh)
# Configurations: ORT fp32 and static-QDQ int8, PyTorch fp32, vitq fp32 / bf16 / W8A8 / W4A8 /
# W2A8 (artifacts made with `vitq quantize --calib random:64` from the same random preset
# weights; 4- and 2-bit weights run on the low-bit kernels).
# Prints every raw line, then per config the median over repetitions and vitq's ratio to the
# ORT fp32 figure of the same model and batch.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-3}"
PEERS="$(cd ../shared/peers && pwd)"
VITQ=build/release/tools/vitq
OUT=$(mktemp)
ART=$(mktemp -d)
export OMP_NUM_THREADS=2
for preset in deit_small swin_tiny; do
  for wbits in 8 4 2; do
    "$VITQ" quantize --model "$preset" --calib random:64 --wbits "$wbits" --abits 8 \
      --output "$ART/$preset.w${wbits}a8.safetensors" >/dev/null
  done
done
for rep in $(seq "$REPS"); do
  echo "# repetition $rep/$REPS" >&2
  for m in deit_s swin_t; do
    preset=$([[ $m == deit_s ]] && echo deit_small || echo swin_tiny)
    (cd "$PEERS" && node bench.js --models "$m" --precs fp32,int8 --bs 1,8 2>/dev/null) | tee -a "$OUT"
    (cd "$PEERS" && OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench_torch.py \
       --models "$m" --precs fp32 --bs 1,8 2>/dev/null) | tee -a "$OUT"
    for target in "$preset:fp32" "$preset:bf16" "$ART/$preset.w8a8.safetensors:fp32" \
                  "$ART/$preset.w4a8.safetensors:fp32" "$ART/$preset.w2a8.safetensors:fp32"; do
      for b in 1 8; do
        "$VITQ" bench --model "${target%:*}" --precision "${target##*:}" --batch "$b" --iters 10 |
          sed "s/model=$preset/model=$m/; s/^engine=vitq/peer=vitq/" | tee -a "$OUT"
      done
    done
  done
done
echo
echo "| model | bs | engine | prec | median ms/batch | img/s | × ORT fp32 | × ORT int8 | × vitq bf16 | × vitq w8a8 |"
echo "|---|---|---|---|---|---|---|---|---|---|"
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
    def ratio(prec_ref, peer_ref="ort-1.30"):
        ref = rows.get((model, bs, peer_ref, prec_ref))
        return "%.2f" % (statistics.median(ref) / ms) if ref else "-"
    print("| %s | %d | %s | %s | %.1f | %.1f | %s | %s | %s | %s |" % (
        model, bs, peer, prec, ms, bs * 1000 / ms, ratio("fp32"), ratio("int8"),
        ratio("bf16", "vitq"), ratio("w8a8", "vitq")))
PY
rm -rf "$OUT" "$ART"
