#!/usr/bin/env bash
# Scrapes under attack: the release exporter in --demo, a hostile crowd from
# 127.0.0.2-127.0.0.9 (idle, slowloris, pipelined-never-read, stalled TLS),
# and a scrape from a fresh connection every 50 ms.
#
#   scripts/attackbench.sh [CONNECTIONS=2000] [SECONDS=20] [--tls | --wrong-passwords]
#
# --wrong-passwords: basic auth only, and every hostile connection sends
# wrong passwords back to back (try 40 connections).
#
# Prints the success rate, p50/p99/max, peak RSS and kernel send queues.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin compute-optimizer-exporter --example attack
exec ./target/release/examples/attack "$@"
