#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end
# tests (the latter against Debian's `prometheus` package, installed here when
# missing and we are root), the rule unit tests, and the benchmarks compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "--- installing Debian's prometheus package (promtool and the server)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool and prometheus are needed: install Debian's 'prometheus' package" >&2
    exit 1
  fi
fi

echo "--- cargo fmt --check"
cargo fmt --check
echo "--- cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "--- cargo test"
cargo test --all-targets --locked
