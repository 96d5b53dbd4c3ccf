#!/usr/bin/env bash
# Logins and scrapes under attack with TLS and basic auth on: one row per
# way they were once starved (hang-ups, waiting logins, wrong-password
# floods, reload storms, many sources, idle keep-alive, DNS rebinding), each
# against a fresh release exporter in --demo, attackers on 127.0.0.2-9, and a
# keep-alive scraper with basic auth over TLS every 50 ms.
#
#   scripts/authattackbench.sh [SECONDS=10]
#
# Prints scrape success, p50/p99/max, the exporter's CPU in cores, and what
# each attack achieved.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin compute-optimizer-exporter --example authattack
exec ./target/release/examples/authattack "$@"
