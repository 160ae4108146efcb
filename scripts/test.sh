#!/usr/bin/env bash
# Runs every test of swift-presence: unit, store conformance, server over real
# sockets, and the real executable. Installs whatever the tests need first, so it
# works the same on a fresh machine, a developer's machine and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1; then
    echo "swift is not on PATH: install the Swift 6 toolchain first" >&2
    exit 1
fi

# SQLite's headers for GRDB (present on most machines; installed when missing).
if ! dpkg -s libsqlite3-dev >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq libsqlite3-dev
fi

# Build everything once (library, executable, tests); the executable tests run the built binary.
swift build --build-tests
swift test --skip-build
