#!/usr/bin/env bash
# Accuracy guard of `vitq quantize --method liu2021` (small and fast): fmnist-deit calibrated on
# 256 training images with a coarse search, evaluated on the first 1,000 test images.
#   W4A4: at least 88% top-1 and at least the percentile baseline with the same data;
#   W6A6: within 1.0 point of the float model (the floor; liu2021 is not always above
#         the percentile baseline at 6 bits — docs/RESULTS.md says by how much and why).
#   liu2021_guard.sh VITQ MODEL WORKDIR
set -euo pipefail
VITQ="$1"; MODEL="$2"; WORK="$3"
mkdir -p "$WORK"
top1() { "$VITQ" eval --model "$1" --dataset fashion-mnist:test:1000 | sed -n 's/^top1=//p'; }
fp=$(top1 "$MODEL")
status=0
for bits in 4 6; do
  common=(--model "$MODEL" --wbits "$bits" --abits "$bits" --calib fashion-mnist:train:256)
  "$VITQ" quantize "${common[@]}" --method liu2021 --candidates 10 --rounds 2 -o "$WORK/liu$bits.safetensors" >/dev/null 2>&1
  "$VITQ" quantize "${common[@]}" --method percentile -o "$WORK/pct$bits.safetensors" >/dev/null 2>&1
  liu=$(top1 "$WORK/liu$bits.safetensors")
  pct=$(top1 "$WORK/pct$bits.safetensors")
  echo "W${bits}A${bits} top-1 on 1000 test images: liu2021 $liu, percentile $pct, fp32 $fp"
  if ((bits == 4)); then
    /usr/bin/python3 -c "import sys; l, p = $liu, $pct; sys.exit(0 if l >= 0.88 and l >= p else 1)" ||
      { echo "W4A4: liu2021 $liu below 0.88 or below percentile $pct"; status=1; }
  else
    /usr/bin/python3 -c "import sys; sys.exit(0 if $liu >= $fp - 0.01 else 1)" ||
      { echo "W6A6: liu2021 $liu more than 1 point below fp32 $fp"; status=1; }
  fi
done
exit $status
