#!/usr/bin/env bash
# Load benchmark: the release exporter polls a stand-in organisation of N
# accounts, then wrk drives concurrent gzip scrapes.
#
#   scripts/loadbench.sh [ACCOUNTS=10000] [CONNECTIONS=4] [SECONDS=10]
#
# With ORGS=N, the exporter watches N organisations of ACCOUNTS accounts
# each ([[organization]] tables, one stand-in each): ORGS=10 with 10000 is
# 100,000 accounts in one process.
#
# With FORMAT=openmetrics, every request sends the Accept header Prometheus
# 3 sends, and the OpenMetrics body is measured (default: the text format).
#
# With AUTOMATION=1, every organisation also has aws.automation on (the
# stand-in's Automation lists the same accounts): both programmes polled,
# both segments served.
#
# With STATUS_CONNECTIONS=N, N more connections ask for /status as fast as
# they can while the scrapes are measured (the pages for people must not
# take the scrapes' CPU).
#
# Prints requests per poll, scrapes/s, latency percentiles and peak RSS
# (the high-water mark, read after every organisation has polled and
# published a second time while its first data was served),
# then, in the same run, the physical limit beside it: nginx serving the
# exporter's own gzip body from a file (gzip_static), same wrk load, with the
# ratio. Needs wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${1:-10000}
CONNS=${2:-4}
SECS=${3:-10}
case "${FORMAT:-text}" in
  text) ACCEPT='*/*' ;;
  openmetrics) ACCEPT='application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1' ;;
  *) echo "FORMAT is text or openmetrics" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed: apt-get install nginx-light" >&2; exit 1; }

cargo build --release --quiet --bin compute-optimizer-exporter --example standin
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ORGS=${ORGS:-}
EP=$(free_port); NP=$(free_port)
printf '[aws]\nregion = "us-east-1"\n' > "$tmp/c.toml"
for i in $(seq 1 "${ORGS:-1}"); do
  SP=$(free_port)
  ./target/release/examples/standin --accounts "$ACCOUNTS" --listen "127.0.0.1:$SP" \
    --first-id $((100000000000 + i * 1000000)) > "$tmp/standin-$i.log" &
  if [ -n "$ORGS" ]; then
    printf '\n[[organization]]\nname = "org-%02d"\nendpoint_url = "http://127.0.0.1:%s"\n' "$i" "$SP" >> "$tmp/c.toml"
  else
    printf 'endpoint_url = "http://127.0.0.1:%s"\n' "$SP" >> "$tmp/c.toml"
  fi
  if [ -n "${AUTOMATION:-}" ]; then
    for _ in $(seq 1 100); do grep -q 'automation http' "$tmp/standin-$i.log" && break; sleep 0.1; done
    AU=$(grep -o 'automation http://[0-9.:]*' "$tmp/standin-$i.log" | cut -d' ' -f2)
    printf 'automation = true\nautomation_endpoint_url = "%s"\n' "$AU" >> "$tmp/c.toml"
  fi
done
printf '\n[poll]\ninterval = "5m"\n' >> "$tmp/c.toml"
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  ./target/release/compute-optimizer-exporter --config.file "$tmp/c.toml" \
  --web.listen-address "127.0.0.1:$EP" --log.level warn &
EXPORTER=$!
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$EP/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$EP/-/ready" >/dev/null
if [ -n "${AUTOMATION:-}" ]; then
  # Every organisation's Automation poll has published too.
  for _ in $(seq 1 600); do
    curl -s "http://127.0.0.1:$EP/metrics" | awk -v want="${ORGS:-1}" '
      /^aws_compute_optimizer_automation_up/ && $2 == 1 { n++ } END { exit n == want ? 0 : 1 }' && break
    sleep 0.1
  done
fi
sleep 1.2
requests=$(for f in "$tmp"/standin-*.log; do tail -1 "$f"; done | awk '{s += $NF} END {print s}')
scrape=$(curl -s "http://127.0.0.1:$EP/metrics")
# The slowest organisation's first poll.
poll_s=$(awk '/^aws_compute_optimizer_poll_duration_seconds_sum/ {if ($2 > m) m = $2} END {print m}' <<<"$scrape")
# All CPU the exporter used so far (start-up and the first poll), per page.
# (utime + stime from /proc, in clock ticks: finer than process_cpu_seconds_total.)
ticks=$(awk '{print $14 + $15}' "/proc/$EXPORTER/stat")
cpu_ms_per_page=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v r="$requests" 'BEGIN {printf "%.3f", t * 1000 / hz / r}')
bytes=$(curl -s -H "Accept: $ACCEPT" "http://127.0.0.1:$EP/metrics" | wc -c)
gz=$(curl -s -H "Accept: $ACCEPT" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$EP/metrics" | wc -c)

# wrk's figures: requests/s, p50, p99 (normalised to ms).
bench() {
  wrk -t "$CONNS" -c "$CONNS" -d "${SECS}s" --latency -H "Accept: $ACCEPT" -H 'Accept-Encoding: gzip' "$1" > "$tmp/wrk.txt"
  if grep -qE 'Non-2xx|Socket errors' "$tmp/wrk.txt"; then cat "$tmp/wrk.txt" >&2; exit 1; fi
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.2f %.2f\n", rps, p50, p99 }' "$tmp/wrk.txt"
}
if [ -n "${STATUS_CONNECTIONS:-}" ]; then
  wrk -t 2 -c "$STATUS_CONNECTIONS" -d "$((SECS + 2))s" "http://127.0.0.1:$EP/status" > "$tmp/status-wrk.txt" &
  STATUS_WRK=$!
  sleep 1
fi
read -r rps p50 p99 <<<"$(bench "http://127.0.0.1:$EP/metrics")"
if [ -n "${STATUS_CONNECTIONS:-}" ]; then
  wait "$STATUS_WRK"
  echo "meanwhile $STATUS_CONNECTIONS connections asked for /status: $(awk '/Requests\/sec/ {print $2}' "$tmp/status-wrk.txt") pages/s"
fi
# The peak while every organisation publishes again, its previous data
# still served: a [poll] change makes each poll at once (SIGHUP), and the
# peak is read once every second poll has published.
# (Automation's interval follows poll.interval, so it publishes again too.)
before=$(curl -s "http://127.0.0.1:$EP/metrics" | awk '/^aws_compute_optimizer_automation_last_success_timestamp_seconds/ {if (m == "" || $2 > m) m = $2} END {print m + 0}')
sed -i 's/^interval = "5m"$/interval = "4m"/' "$tmp/c.toml"
kill -HUP "$EXPORTER"
for _ in $(seq 1 600); do
  curl -s "http://127.0.0.1:$EP/metrics" | awk -v before="$before" -v auto="${AUTOMATION:-}" '
    /^aws_compute_optimizer_polls_total\{.*result="success"/ { n++; if ($2 < 2) low++ }
    /^aws_compute_optimizer_automation_last_success_timestamp_seconds/ { if ($2 <= before) low++ }
    END { exit (n > 0 && low == 0) ? 0 : 1 }' && break
  sleep 0.1
done
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$EXPORTER/status")

# The static-file limit: the exporter's own bytes, served by nginx.
mkdir -p "$tmp/www"
curl -s -H "Accept: $ACCEPT" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$EP/metrics" > "$tmp/www/metrics.gz"
curl -s -H "Accept: $ACCEPT" "http://127.0.0.1:$EP/metrics" > "$tmp/www/metrics"
cat > "$tmp/nginx.conf" <<NGINX
worker_processes 2;
user root;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  server {
    listen 127.0.0.1:$NP;
    root $tmp/www;
    location = /metrics { default_type "text/plain; version=0.0.4; charset=utf-8"; gzip_static on; }
  }
}
NGINX
nginx -c "$tmp/nginx.conf" -g 'daemon off;' &
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NP/metrics" >/dev/null 2>&1 && break; sleep 0.1; done
gz_file=$(wc -c < "$tmp/www/metrics.gz")
[ "$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$NP/metrics" | wc -c)" = "$gz_file" ] || { echo "nginx does not serve the gzip file" >&2; exit 1; }
read -r nrps np50 np99 <<<"$(bench "http://127.0.0.1:$NP/metrics")"
nginx_rss_kb=$(ps -o rss= --ppid "$(cat "$tmp/nginx.pid")" --pid "$(cat "$tmp/nginx.pid")" | awk '{s += $1} END {print s}')

echo "organizations=${ORGS:-1} accounts=$((ACCOUNTS * ${ORGS:-1})) requests_per_poll=$requests poll_seconds=$poll_s cpu_ms_per_page=$cpu_ms_per_page body_bytes=$bytes gzip_bytes=$gz"
printf '%-28s %10s %9s %9s %12s %8s\n' server scrapes/s p50_ms p99_ms gzip_bytes rss_mb
printf '%-28s %10s %9s %9s %12s %8s\n' compute-optimizer-exporter "$rps" "$p50" "$p99" "$gz" "$((rss_kb / 1024))"
printf '%-28s %10s %9s %9s %12s %8s\n' "nginx gzip_static (limit)" "$nrps" "$np50" "$np99" "$gz_file" "$((nginx_rss_kb / 1024))"
awk -v a="$rps" -v b="$nrps" 'BEGIN { printf "exporter/nginx throughput ratio: %.2f\n", a / b }'
echo "reference: gzip -9 (zlib) of the same plain text: $(gzip -9 -c "$tmp/www/metrics" | wc -c) bytes"
