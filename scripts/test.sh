#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end
# tests (the latter against Debian's `prometheus` and `chromium` packages,
# installed here when missing and we are root), and the benchmarks compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests drive: the Prometheus server and
# promtool, and headless Chromium for the status page.
missing=()
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "--- installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]} (install them, then re-run)" >&2
    exit 1
  fi
fi

echo "--- cargo fmt --check"
cargo fmt --check
echo "--- cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "--- cargo test"
cargo test --all-targets --locked
