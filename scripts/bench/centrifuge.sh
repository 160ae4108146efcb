#!/usr/bin/env bash
# Builds the Centrifuge server that `presence-bench run fanout --centrifuge` compares against
# (scripts/bench/centrifuge/main.go) from Debian's Go packages, installing them when missing,
# and prints where it is:
#
#   scripts/bench/centrifuge.sh
#   .build/release/presence-bench run fanout --server .build/release/presence-server --centrifuge .build/centrifuge-server
#
# Debian packages Centrifuge 0.15 (2021) with its protocol v1; the run measures that version.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
for package in golang-go golang-github-centrifugal-centrifuge-dev golang-github-centrifugal-protocol-dev \
    golang-github-fzambia-eagle-dev golang-github-igm-sockjs-go-dev golang-github-mna-redisc-dev; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p .build
# Debian's Go libraries are sources in a GOPATH, not modules.
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= go build -o .build/centrifuge-server scripts/bench/centrifuge/main.go
echo .build/centrifuge-server
