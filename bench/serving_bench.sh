#!/usr/bin/env bash
# Serving efficiency and overhead of vitq-server, measured against offline `vitq bench` of the
# same model in one run (this machine's speed drifts, so only same-run ratios mean anything):
#   1. throughput: vitq-client at concurrency 16 (batches of 8 form) vs `vitq bench --batch 8`;
#   2. overhead:   p50 latency at concurrency 1 vs `vitq bench --batch 1` (median ms per batch);
#   3. overload:   concurrency 256 against a queue of 8 requests: every request answered (OK or
#                  RESOURCE_EXHAUSTED), server memory (VmHWM) before/after, then recovery at
#                  concurrency 1.
#   bench/serving_bench.sh [MODEL=deit_small] [SECONDS=20]
# The queue delay is 0: under closed-loop load batches fill while the previous batch runs, and a
# lone request (concurrency 1) is not held back waiting for company.
# MODEL is a preset served with random weights, as W8A8 (artifact made here with
# `vitq quantize --calib random:64`), which is what the server runs. Needs a release build and an
# otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-deit_small}"
SECONDS_PER_RUN="${2:-20}"
BIN=build/release/tools
WORK=$(mktemp -d)
export OMP_NUM_THREADS=2
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/vitq" quantize --model "$MODEL" --calib random:64 --output "$WORK/$MODEL.w8a8.safetensors" >/dev/null
# "input: [N, 3, 224, 224]" -> 3,224,224
shape=$("$BIN/vitq" info --model "$MODEL" | sed -n 's/^input: \[N, \(.*\)\]$/\1/p' | tr -d ' ')

write_config() {  # max_queue_size
  cat > "$WORK/serving.yaml" <<YAML
server: {listen: 127.0.0.1:0, metrics_listen: "", max_message_bytes: 67108864, drain_grace_s: 30}
models:
  - name: $MODEL
    batching: {max_batch_size: 8, max_queue_delay_us: 0, max_queue_size: $1}
    variants:
      - {name: w8a8, path: $WORK/$MODEL.w8a8.safetensors, weight: 1}
YAML
}

start_server() {
  "$BIN/vitq-server" --config "$WORK/serving.yaml" > "$WORK/server.out" 2>"$WORK/server.err" &
  server_pid=$!
  for _ in $(seq 600); do
    address=$(sed -n 's/^vitq-server: listening on //p' "$WORK/server.out")
    [[ -n $address ]] && return
    sleep 0.2
  done
  echo "serving_bench: server did not start" >&2; cat "$WORK/server.err" >&2; exit 1
}

stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
hwm_mb() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$server_pid/status"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
offline() {  # batch -> "ms_per_batch img_per_s"
  "$BIN/vitq" bench --model "$WORK/$MODEL.w8a8.safetensors" --batch "$1" --iters 30 --warmup 5 |
    sed -n 's/.*ms_per_batch=\([0-9.]*\) img_per_s=\([0-9.]*\).*/\1 \2/p'
}
load() {  # concurrency seconds -> JSON report
  "$BIN/vitq-client" load --address "$address" --model "$MODEL" --tensor-shape "$shape" \
    --concurrency "$1" --duration "$2" --warmup-requests 16 --json
}

write_config 256
start_server
read -r _ offline_b8_ips < <(offline 8)
c16=$(load 16 "$SECONDS_PER_RUN")
read -r offline_b1_ms _ < <(offline 1)
c1=$(load 1 "$SECONDS_PER_RUN")
stop_server

write_config 8
start_server
hwm_before=$(hwm_mb)
c256=$(load 256 "$SECONDS_PER_RUN")
hwm_after=$(hwm_mb)
recover=$(load 1 5)
stop_server

served_ips=$(echo "$c16" | json 'd["throughput_rps"]')
c1_p50=$(echo "$c1" | json 'd["latency_ms"]["p50"]')
echo "## vitq-server vs offline, $MODEL W8A8, $(nproc) cores, $(date -u +%F)"
echo
echo "| measure | served | offline | ratio / difference | floor |"
echo "|---|---|---|---|---|"
/usr/bin/python3 - "$served_ips" "$offline_b8_ips" "$c1_p50" "$offline_b1_ms" <<'PY'
import sys
served, offline, p50, b1 = map(float, sys.argv[1:])
print(f"| throughput, concurrency 16 vs offline batch 8 | {served:.1f} img/s | {offline:.1f} img/s | {served / offline:.1%} | ≥ 85% |")
print(f"| p50 latency, concurrency 1 vs offline batch 1 | {p50:.2f} ms | {b1:.2f} ms | +{p50 - b1:.2f} ms | ≤ +1 ms |")
PY
echo
echo "Overload (concurrency 256, max_queue_size 8, ${SECONDS_PER_RUN} s): codes $(echo "$c256" | json 'd["codes"]'),"
echo "sent $(echo "$c256" | json 'd["sent"]'); server VmHWM ${hwm_before} MB before, ${hwm_after} MB after."
echo "Recovery at concurrency 1 right after: codes $(echo "$recover" | json 'd["codes"]'), p50 $(echo "$recover" | json 'd["latency_ms"]["p50"]') ms."
