#!/usr/bin/env bash
# Load benchmark: the release exporter polls a stand-in organisation of N
# accounts, then wrk drives concurrent gzip scrapes.
#
#   scripts/loadbench.sh [ACCOUNTS=10000] [CONNECTIONS=4] [SECONDS=10]
#
# Prints requests per poll, scrapes/s, latency percentiles and peak RSS.
# Needs wrk (Debian: apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${1:-10000}
CONNS=${2:-4}
SECS=${3:-10}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet --bin compute-optimizer-exporter --example standin
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
SP=$(free_port); EP=$(free_port)
./target/release/examples/standin --accounts "$ACCOUNTS" --listen "127.0.0.1:$SP" > "$tmp/standin.log" &
cat > "$tmp/c.toml" <<TOML
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:$SP"
[poll]
interval = "5m"
TOML
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  ./target/release/compute-optimizer-exporter --config.file "$tmp/c.toml" \
  --web.listen-address "127.0.0.1:$EP" --log.level warn &
EXPORTER=$!
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$EP/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$EP/-/ready" >/dev/null
sleep 1.2
requests=$(tail -1 "$tmp/standin.log" | awk '{print $NF}')
scrape=$(curl -s "http://127.0.0.1:$EP/metrics")
poll_s=$(awk '/^aws_compute_optimizer_poll_duration_seconds_sum/ {print $2}' <<<"$scrape")
# All CPU the exporter used so far (start-up and the first poll), per page.
# (utime + stime from /proc, in clock ticks: finer than process_cpu_seconds_total.)
ticks=$(awk '{print $14 + $15}' "/proc/$EXPORTER/stat")
cpu_ms_per_page=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v r="$requests" 'BEGIN {printf "%.3f", t * 1000 / hz / r}')
bytes=$(curl -s "http://127.0.0.1:$EP/metrics" | wc -c)
gz=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$EP/metrics" | wc -c)

wrk -t "$CONNS" -c "$CONNS" -d "${SECS}s" --latency -H 'Accept-Encoding: gzip' \
  "http://127.0.0.1:$EP/metrics" > "$tmp/wrk.txt"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$EXPORTER/status")

rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
p50=$(awk '$1=="50%" {print $2}' "$tmp/wrk.txt")
p99=$(awk '$1=="99%" {print $2}' "$tmp/wrk.txt")
errors=$(grep -E 'Non-2xx|Socket errors' "$tmp/wrk.txt" || true)
echo "accounts=$ACCOUNTS requests_per_poll=$requests poll_seconds=$poll_s cpu_ms_per_page=$cpu_ms_per_page body_bytes=$bytes gzip_bytes=$gz"
echo "scrapers=$CONNS scrapes_per_second=$rps p50=$p50 p99=$p99 peak_rss_mb=$((rss_kb / 1024))"
[ -z "$errors" ] || { echo "$errors"; exit 1; }
