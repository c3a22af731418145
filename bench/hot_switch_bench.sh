#!/usr/bin/env bash
# What a hot switch costs under load: vitq-client at concurrency 16 against the shipped
# fmnist-deit variants (fp32, w8a8, w4a4), first SECONDS of steady state on a fixed routing, then
# SECONDS during which the routing changes every SWITCH_EVERY seconds (rotating all traffic
# between the three variants, through `vitq-client admin set-routing`). Reports throughput, p50,
# p99 and the status codes of both runs, and the switches made.
#   bench/hot_switch_bench.sh [SECONDS=20] [SWITCH_EVERY=1]
# Needs a release build and an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-20}"
SWITCH_EVERY="${2:-1}"
BIN=build/release/tools
WORK=$(mktemp -d)
export OMP_NUM_THREADS=2
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl rand -hex 16 > "$WORK/token"
cat > "$WORK/serving.yaml" <<YAML
server: {listen: 127.0.0.1:0, metrics_listen: "", admin: {listen: 127.0.0.1:0, token_file: $WORK/token}}
models:
  - name: fmnist-deit
    batching: {max_batch_size: 32, max_queue_delay_us: 1000, max_queue_size: 512}
    variants:
      - {name: fp32, path: $PWD/models/fmnist-deit.safetensors, weight: 1}
      - {name: w8a8, path: $PWD/models/fmnist-deit.w8a8.safetensors, weight: 1}
      - {name: w4a4, path: $PWD/models/fmnist-deit.w4a4.safetensors, weight: 1}
YAML
"$BIN/vitq-server" --config "$WORK/serving.yaml" > "$WORK/server.out" 2>"$WORK/server.err" &
server_pid=$!
for _ in $(seq 300); do
  grep -q "admin on" "$WORK/server.out" 2>/dev/null && break
  sleep 0.2
done
address=$(sed -n 's/^vitq-server: listening on //p' "$WORK/server.out")
admin=$(sed -n 's/^vitq-server: admin on //p' "$WORK/server.out")
[[ -n $address && -n $admin ]] || { echo "hot_switch_bench: server did not start" >&2; cat "$WORK/server.err" >&2; exit 1; }

load() {  # -> JSON report of a closed-loop run at concurrency 16
  "$BIN/vitq-client" load --address "$address" --model fmnist-deit --image config/samples/0001-pullover.png \
    --concurrency 16 --duration "$SECONDS_PER_RUN" --warmup-requests 200 --json
}
summary() {
  /usr/bin/python3 -c "
import json, sys
d = json.load(sys.stdin)
l = d['latency_ms']
print(f\"{sys.argv[1]:>22}: {d['throughput_rps']:8.1f} req/s  p50 {l['p50']:6.2f} ms  p99 {l['p99']:6.2f} ms  codes {d['codes']}  variants {d.get('variants', {})}\")
" "$1"
}

load > "$WORK/steady.json"
summary "steady (1:1:1 split)" < "$WORK/steady.json"

( end=$((SECONDS + SECONDS_PER_RUN + 2)); i=0
  while ((SECONDS < end)); do
    case $((i % 3)) in
      0) weights=fp32=1,w8a8=0,w4a4=0 ;; 1) weights=fp32=0,w8a8=1,w4a4=0 ;; *) weights=fp32=0,w8a8=0,w4a4=1 ;;
    esac
    "$BIN/vitq-client" admin --address "$admin" --token-file "$WORK/token" set-routing \
      --model fmnist-deit --weights "$weights" > /dev/null
    i=$((i + 1)); sleep "$SWITCH_EVERY"
  done; echo "$i" > "$WORK/switches" ) &
switcher=$!
load > "$WORK/switching.json"
wait "$switcher"
summary "switching every ${SWITCH_EVERY}s" < "$WORK/switching.json"
echo "switches made: $(cat "$WORK/switches")"
