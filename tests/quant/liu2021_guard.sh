#!/usr/bin/env bash
# Accuracy guard of `vitq quantize --method liu2021` (small and fast): fmnist-deit at W4A4,
# calibrated on 256 training images with a coarse search, must reach 88% top-1 on the first
# 1,000 test images and do at least as well as the percentile baseline with the same data.
#   liu2021_guard.sh VITQ MODEL WORKDIR
set -euo pipefail
VITQ="$1"; MODEL="$2"; WORK="$3"
mkdir -p "$WORK"
common=(--model "$MODEL" --wbits 4 --abits 4 --calib fashion-mnist:train:256)
"$VITQ" quantize "${common[@]}" --method liu2021 --candidates 10 --rounds 2 -o "$WORK/liu.safetensors" >/dev/null 2>&1
"$VITQ" quantize "${common[@]}" --method percentile -o "$WORK/pct.safetensors" >/dev/null 2>&1
top1() { "$VITQ" eval --model "$1" --dataset fashion-mnist:test:1000 | sed -n 's/^top1=//p'; }
liu=$(top1 "$WORK/liu.safetensors")
pct=$(top1 "$WORK/pct.safetensors")
echo "W4A4 top-1 on 1000 test images: liu2021 $liu, percentile $pct"
/usr/bin/python3 -c "import sys; l, p = $liu, $pct; sys.exit(0 if l >= 0.88 and l >= p else 1)"
