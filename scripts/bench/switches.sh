#!/usr/bin/env bash
# CPU and context switches per change while `presence-bench run fixedcost` drives a server: what
# a change costs when nothing batches is mostly waking threads, and the switch count says how
# many, where CPU time is noise. Installs Debian's perf when missing.
#
#   scripts/bench/switches.sh                               # this build, memory and sqlite
#   scripts/bench/switches.sh /tmp/old/presence-server sqlite
set -euo pipefail
cd "$(dirname "$0")/../.."
server=${1:-.build/release/presence-server}
stores=${2:-"memory sqlite"}
command -v perf >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
swift build -c release --product presence-bench >/dev/null 2>&1
server=$(realpath "$server")
seconds=6
changes=$((400 * seconds))  # fixedcost's pace: 400 changes a second
for store in $stores; do
    log=$(mktemp)
    .build/release/presence-bench run fixedcost --server "$server" >"$log" 2>&1 &
    bench=$!
    until grep -q "fixed cost ($store): 400 joins" "$log"; do
        kill -0 "$bench" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.1
    done
    sleep 1
    pid=$(pgrep -n -f "^$server --port")
    perf stat -x, -e task-clock,context-switches -p "$pid" -- sleep "$seconds" 2>"$log.stat"
    awk -F, -v store="$store" -v changes="$changes" '
        $3 == "task-clock" { cpu = $1 } $3 == "context-switches" { switches = $1 }
        END { printf "%s: %.3f ms of server CPU and %.1f context switches per change\n", store, cpu / changes, switches / changes }' "$log.stat"
    kill "$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    pkill -f "^$server --port" 2>/dev/null || true
    rm -f "$log" "$log.stat"
done
