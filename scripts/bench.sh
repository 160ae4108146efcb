#!/usr/bin/env bash
# Runs every benchmark scenario against a release build of presence-server on
# 127.0.0.1 and prints one table (see BENCHMARKS.md). Not part of the tests;
# they run each scenario briefly instead (BenchmarkSmokeTests).
#
#   scripts/bench.sh                      # all scenarios, about 4 minutes after the build
#   scripts/bench.sh fanout expiry        # some of them
#   scripts/bench.sh --json figures.json  # also write the figures as JSON
#   scripts/bench.sh --update             # all scenarios; rewrites BENCHMARKS.md's figures with the date and commit
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release --product presence-server
swift build -c release --product presence-bench
arguments=()
for argument in "$@"; do
    if [[ "$argument" == "--update" ]]; then
        commit="$(git rev-parse --short HEAD)"
        if [[ -n "$(git status --porcelain -- Sources Package.swift)" ]]; then commit="$commit with uncommitted changes"; fi
        arguments+=(--markdown BENCHMARKS.md --commit "$commit" --json .build/bench-figures.json)
    else
        arguments+=("$argument")
    fi
done
exec .build/release/presence-bench run --server .build/release/presence-server "${arguments[@]}"
