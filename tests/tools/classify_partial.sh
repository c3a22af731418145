#!/usr/bin/env bash
# classify_partial.sh VITQ MODEL BAD_IMAGE GOOD_IMAGE: a bad image among good ones is reported
# on stderr, the good one is still classified, and the exit code is 1 (not a crash).
vitq="$1" model="$2" bad="$3" good="$4"
out=$("$vitq" classify --model "$model" --topk 2 "$bad" "$good" 2>/tmp/vitq_classify_err.$$)
code=$?
err=$(cat /tmp/vitq_classify_err.$$); rm -f /tmp/vitq_classify_err.$$
[[ $code -eq 1 ]] || { echo "exit $code, expected 1"; exit 1; }
[[ "$err" == *"$bad"*"cannot decode"* ]] || { echo "stderr: $err"; exit 1; }
[[ "$out" == *"$good"*"1. "*"2. "* ]] || { echo "stdout: $out"; exit 1; }
echo ok
