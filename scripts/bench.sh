#!/usr/bin/env bash
# Runs every benchmark scenario against a release build of presence-server on
# 127.0.0.1 and prints one table (see BENCHMARKS.md). Not part of the tests;
# they run each scenario briefly instead (BenchmarkSmokeTests).
#
#   scripts/bench.sh                      # all scenarios, about 3 minutes after the build
#   scripts/bench.sh fanout expiry        # some of them
#   scripts/bench.sh --json figures.json  # also write the figures as JSON
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release --product presence-server
swift build -c release --product presence-bench
exec .build/release/presence-bench run --server .build/release/presence-server "$@"
