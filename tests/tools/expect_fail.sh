#!/usr/bin/env bash
# expect_fail.sh PHRASE COMMAND...: passes when COMMAND exits non-zero, does not crash
# (no signal), and prints PHRASE on stderr.
phrase="$1"
shift
err=$("$@" 2>&1 >/dev/null)
code=$?
if ((code == 0)); then echo "expected failure, got exit 0"; exit 1; fi
if ((code >= 128)); then echo "crashed with signal $((code - 128)): $err"; exit 1; fi
if [[ "$err" != *"$phrase"* ]]; then echo "stderr lacks '$phrase':"; echo "$err"; exit 1; fi
echo "ok (exit $code): $err"
