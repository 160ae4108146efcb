#!/usr/bin/env python3
"""Samples per second of a `perf record -g` profile, by component.

Each sample goes to the first frame, from the leaf up, that names one of the components below,
so a component's figure includes the library code it called (a parse's allocations count as the
parse). Used for the steady-state profiles in BENCHMARKS.md:

    perf record -F 2000 -g -p $(pgrep -x presence-server) -o steady.data -- sleep 20
    python3 scripts/bench/perf_components.py steady.data 20
"""
import collections
import re
import subprocess
import sys

COMPONENTS = [
    ("scheduler (finish_task_switch)", r"finish_task_switch"),
    ("write system calls", r"__GI___libc_write|__GI___writev"),
    ("read system calls", r"__GI___libc_read|__libc_recv"),
    ("epoll_wait", r"\bepoll_wait"),
    ("JSON parse", r"JSONParser|JSONObject|13SocketRequestV"),
    ("store heartbeat", r"PresenceCore0A5State|MemoryStore|SQLiteStore|PostgresStore|PresenceStore"),
    ("reply encoding", r"ServerFrame|JSONWriter"),
    ("authorizer", r"Authoriz|authenticate"),
    ("outbox", r"6OutboxC"),
    ("socket reader", r"SocketReader"),
    ("task runtime", r"swift_task|swift_job|AsyncTask|EventLoopTaskExecutor|swift::"),
    ("keep-alive handler", r"WebSocketKeepAlive"),
    ("timers' heap", r"ScheduledTask|Heap|PriorityQueue|scheduleTask"),
    ("socket handler", r"PresenceSocketHandler|MaskedFramesOnly"),
    ("WebSocket frame codec", r"FrameDecoder|FrameAggregator|FrameEncoder|WebSocketFrame"),
    ("floor's reply handler", r"FixedReply"),
    ("NIO pipeline and reads", r"NIOCore|NIOPosix"),
]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: perf_components.py PERF_DATA SECONDS")
    path, seconds = sys.argv[1], float(sys.argv[2])
    script = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True, text=True, check=True).stdout
    patterns = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]
    counts: collections.Counter[str] = collections.Counter()
    for sample in script.split("\n\n"):
        frames = [line.strip().split(" ", 1)[-1] for line in sample.strip().split("\n") if line.strip()]
        if not frames:
            continue
        component = next((name for frame in frames for name, pattern in patterns if pattern.search(frame)), "other")
        counts[component] += 1
    total = sum(counts.values())
    for name, count in counts.most_common():
        print(f"{name:32s} {count:7d} {count / seconds:8.1f}/s {100 * count / total:5.1f} %")
    print(f"{'all samples':32s} {total:7d} {total / seconds:8.1f}/s")


if __name__ == "__main__":
    main()
