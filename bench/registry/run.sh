#!/usr/bin/env bash
# Registry benchmarks: registration -> proxy routing propagation (embedded
# store and etcd), and one registry process holding 10,000 instances with
# 1,000 watchers (memory, CPU per update). Results go to BENCHMARKS.md by
# hand, with the machine they ran on.
#
#   bench/registry/run.sh            # everything
#   SAMPLES=200 bench/registry/run.sh
#
# Needs Debian's etcd-server for the etcd figures (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd-server"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq etcd-server
    else sudo apt-get update -qq && sudo apt-get install -y -qq etcd-server; fi
fi

cargo build --release --locked -p switchyard-cli -p switchyard-bench-registry
target="${CARGO_TARGET_DIR:-target}/release"
# 1,000 watchers hold 1,000 connections on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

samples="${SAMPLES:-500}"
"$target/switchyard-bench-registry" propagation --store embedded --samples "$samples"
"$target/switchyard-bench-registry" propagation --store etcd --samples "$samples"
"$target/switchyard-bench-registry" scale --bin "$target/switchyard" \
    --instances 10000 --services 100 --watchers 1000 --updates 500
"$target/switchyard-bench-registry" scale --bin "$target/switchyard" \
    --instances 10000 --services 1 --watchers 1000 --updates 10 --interval-ms 3000
# The same with delta answers, as the proxy's registry source asks for them.
"$target/switchyard-bench-registry" scale --bin "$target/switchyard" \
    --instances 10000 --services 1 --watchers 1000 --updates 20 --interval-ms 500 --delta
