#!/usr/bin/env bash
# docs/status-screenshot.sh - regenerates docs/status-page.png (the README's status page picture).
#
# Runs `stickylb demo` on loopback ports, drives a bounded amount of traffic through it (24
# workers, each starting a new session every 8 requests), drains demo2, and screenshots the
# status page with headless Chromium (Debian package `chromium`). Everything it starts is
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=127.0.0.1:18080
ADMIN=127.0.0.1:19090
OUT=docs/status-page.png

cargo build -q
"${CARGO_TARGET_DIR:-target}/debug/stickylb" demo --listen "$LISTEN" --admin "$ADMIN" >/dev/null 2>&1 &
demo=$!
work=$(mktemp -d)
workers=()
cleanup() {
  # Workers stop at their next request once the stop file exists.
  touch "$work/stop"
  for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
  kill "$demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 50); do curl -sf "http://$ADMIN/healthz" >/dev/null && break; sleep 0.1; done

for w in $(seq 24); do
  (
    for s in $(seq 12); do
      for i in $(seq 8); do
        [ -e "$work/stop" ] && exit 0
        curl -s -o /dev/null -c "$work/jar-$w-$s" -b "$work/jar-$w-$s" "http://$LISTEN/page/$i"
        sleep 0.02
      done
    done
  ) &
  workers+=($!)
done

sleep 6
curl -sf -X POST "http://$ADMIN/api/backends/demo2/drain" >/dev/null
sleep 3
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-dev-shm-usage \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --virtual-time-budget=5000 \
  --window-size=1200,700 --screenshot="$OUT" "http://$ADMIN/" 2>/dev/null
echo "wrote $OUT"
