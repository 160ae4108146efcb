#!/usr/bin/env bash
# Fuzzes everything the server decodes from untrusted bytes (Fuzz/): the JSON parser, HTTP bodies,
# WebSocket messages, query values, and request heads (NIO's HTTP/1 parser, then the WebSocket
# handshake, forwarding and Origin checks), with libFuzzer and AddressSanitizer.
#
#   scripts/fuzz.sh [SECONDS]          fuzz for SECONDS (default 60) from the committed corpus
#   scripts/fuzz.sh --merge SECONDS    the same, then fold new interesting inputs into Fuzz/corpus
#
# Inputs that crash are written to .build-fuzz/crashes/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=false
if [ "${1:-}" = "--merge" ]; then merge=true; shift; fi
seconds="${1:-60}"

# lld: Debian's gold stops with an internal error on this instrumented build.
swift build -c release --package-path Fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >/dev/null
fuzzer=".build-fuzz/release/PresenceFuzz"

# New inputs go to a scratch corpus, so a short run never changes the committed one.
work=".build-fuzz/corpus"
mkdir -p "$work" .build-fuzz/crashes
cp -n Fuzz/corpus/* "$work/" 2>/dev/null || true
"$fuzzer" "$work" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=.build-fuzz/crashes/ -print_final_stats=1 2>.build-fuzz/last-run.log || {
    tail -40 .build-fuzz/last-run.log >&2
    echo "fuzzing found a failure: see .build-fuzz/crashes/" >&2
    exit 1
}
grep -E "^stat::number_of_executed_runs|^stat::new_units_added" .build-fuzz/last-run.log || true
echo "fuzzing: no failure in ${seconds} s"

if $merge; then
    mkdir -p .build-fuzz/merged
    rm -f .build-fuzz/merged/*
    "$fuzzer" -merge=1 .build-fuzz/merged Fuzz/corpus "$work" -max_len=4096 2>/dev/null
    rm -f Fuzz/corpus/*
    cp .build-fuzz/merged/* Fuzz/corpus/
    echo "corpus: $(ls Fuzz/corpus | wc -l) inputs"
fi
