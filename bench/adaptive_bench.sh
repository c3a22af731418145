#!/usr/bin/env bash
# Load-adaptive precision under a load step, on the shipped fmnist-deit (fp32 reference, w8a8):
#   1. capacity: closed-loop throughput of each variant alone (concurrency 32, 8 s);
#   2. the SLO: p99_slo_ms = 3 x fp32's p99 at half its capacity (what fp32 holds comfortably);
#   3. a step in open loop: LOW = 0.5 x fp32 capacity for 20 s, HIGH = 1.2 x fp32 capacity for
#      40 s (beyond fp32, within w8a8), LOW again for 40 s — once with fp32 alone, once with the
#      adaptive policy [fp32, w8a8] (agreement floor 0.99, 20% of w8a8 answers shadowed on fp32).
# Prints per phase and run the throughput, p50/p99 and codes, the controller's moves from the
# server log, and the agreement w8a8 kept (vitq_shadow_agreement_ratio).
#   bench/adaptive_bench.sh
# Needs a release build and an otherwise idle machine; takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/release/tools
WORK=$(mktemp -d)
IMAGE=config/samples/0001-pullover.png
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

write_config() {  # fp32-weight, extra model settings
  cat > "$WORK/serving.yaml" <<YAML
server: {listen: 127.0.0.1:0, metrics_listen: 127.0.0.1:0}
models:
  - name: fmnist-deit
    batching: {max_batch_size: 32, max_queue_delay_us: 1000, max_queue_size: 4096}
    variants:
      - {name: fp32, path: $PWD/models/fmnist-deit.safetensors, weight: 1}
      - {name: w8a8, path: $PWD/models/fmnist-deit.w8a8.safetensors, weight: 0}
$1
YAML
}
start_server() {
  "$BIN/vitq-server" --config "$WORK/serving.yaml" > "$WORK/server.out" 2>"$WORK/server.err" &
  server_pid=$!
  for _ in $(seq 300); do grep -q "metrics on" "$WORK/server.out" 2>/dev/null && break; sleep 0.2; done
  address=$(sed -n 's/^vitq-server: listening on //p' "$WORK/server.out")
  metrics=$(sed -n 's/^vitq-server: metrics on //p' "$WORK/server.out")
  [[ -n $address ]] || { echo "adaptive_bench: server did not start" >&2; cat "$WORK/server.err" >&2; exit 1; }
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
field() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
closed() {  # variant -> JSON
  "$BIN/vitq-client" load --address "$address" --model fmnist-deit --variant "$1" --image "$IMAGE" \
    --concurrency 32 --duration 8 --warmup-requests 200 --json
}
open_loop() {  # rate seconds -> JSON
  "$BIN/vitq-client" load --address "$address" --model fmnist-deit --image "$IMAGE" \
    --rate "$1" --duration "$2" --concurrency 256 --json
}
report() {  # label < JSON
  /usr/bin/python3 -c "
import json, sys
d = json.load(sys.stdin); l = d['latency_ms']
print(f\"  {sys.argv[1]:<28} {d['throughput_rps']:8.1f} req/s  p50 {l['p50']:7.2f} ms  p99 {l['p99']:8.2f} ms  codes {d['codes']}  variants {d.get('variants', {})}\")
" "$1"
}

write_config ""
start_server
fp32_cap=$(closed fp32 | field "d['throughput_rps']")
w8a8_cap=$(closed w8a8 | field "d['throughput_rps']")
low=$(/usr/bin/python3 -c "print(round(0.5 * $fp32_cap))")
high=$(/usr/bin/python3 -c "print(round(1.2 * $fp32_cap))")
slo=$(open_loop "$low" 8 | field "round(3 * d['latency_ms']['p99'], 1)")
stop_server
echo "capacity: fp32 $fp32_cap req/s, w8a8 $w8a8_cap req/s; load step $low -> $high -> $low req/s; p99 SLO $slo ms"

run_step() {  # label
  echo "$1:"
  open_loop "$low" 20 | report "low  ($low req/s, 20 s)"
  open_loop "$high" 40 | report "high ($high req/s, 40 s)"
  open_loop "$low" 40 | report "low  ($low req/s, 40 s)"
}
write_config ""
start_server
run_step "fp32 alone"
stop_server

write_config "    shadow: {variant: fp32, fraction: 0.2}
    adaptive: {variants: [fp32, w8a8], p99_slo_ms: $slo, agreement_floor: 0.99, min_comparisons: 200, interval_s: 2}"
start_server
# The floor needs measured agreement: 1,000 requests on w8a8 by name, 20% shadowed.
"$BIN/vitq-client" load --address "$address" --model fmnist-deit --variant w8a8 --image "$IMAGE" \
  --concurrency 8 --requests 1000 --json > /dev/null
sleep 3
run_step "adaptive [fp32, w8a8]"
echo "  controller moves:"
grep "adaptive:" "$WORK/server.err" | sed 's/^/    /'
echo "  w8a8 agreement with fp32: $(curl -s "$metrics" | grep '^vitq_shadow_agreement_ratio.*w8a8' | awk '{print $2}')"
