#!/usr/bin/env bash
# standing.sh - every peers run that README's "Where it stands" table quotes, one after the
# other on one build, and that table printed from their outputs:
#
#   cargo build --profile dist --bin stickylb && cargo build --profile dist --example floor
#   benches/standing.sh                      # ~25 minutes; outputs kept in $OUT
#   FROM=dir benches/standing.sh             # only the table, from the outputs of an earlier run
#
# Runs (each as README's Performance section gives it, PIN=1, DUR=5s): memory store, Redis
# store and the floor with ROUNDS=5; the access log on with ROUNDS=3; HTTPS (peers-tls.sh)
# with ROUNDS=5. Knobs: OUT (default /tmp/stickylb-standing.TIME), ROUNDS (5), RUNS (default
# "memory redis log floor tls": a subset runs fewer), PEERS (the peers.sh to run, relative to
# the repository). A run that fails is named and the others go on; its rows then say so, and
# the script exits 1. Loopback only; every process a run starts is stopped by peers.sh /
# peers-tls.sh by its PID.
# A row's figures: the req/s medians of the rounds (as peers.sh prints them), their ratio, and
# the median over the rounds of each target's p99 (peers.sh prints single rounds' p99s only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-memory redis log floor tls}
PEERS=${PEERS:-../shared/bench/peers.sh}
FAILED=

if [ -z "${FROM:-}" ]; then
  OUT=${OUT:-/tmp/stickylb-standing.$(date +%Y%m%dT%H%M%S)}
  mkdir -p "$OUT"
  [ -x target/dist/stickylb ] && [ -x target/dist/examples/floor ] || {
    echo "error: run cargo build --profile dist --bin stickylb && cargo build --profile dist --example floor first" >&2; exit 1; }
  # run NAME COMMAND...: one run, its output kept in $OUT/NAME.txt; a failure is named.
  run() {
    local name=$1
    shift
    echo "# $(date -u +%H:%M:%S) $name (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$@" >"$OUT/$name.txt" 2>&1 || { echo "# $name failed: see $OUT/$name.txt" >&2; FAILED="$FAILED $name"; }
  }
  peers() { # NAME ROUNDS PROXY_CMD
    run "$1" env PIN=1 ROUNDS="$2" DUR=5s PROXY_CMD="$3" PROXY_ADDR=127.0.0.1:8090 bash "$PEERS"
  }
  for which in $RUNS; do
    case $which in
      memory) peers memory "$ROUNDS" "$PWD/benches/peers-proxy.sh" ;;
      redis) peers redis "$ROUNDS" "STORE=redis $PWD/benches/peers-proxy.sh" ;;
      log) peers log 3 "ACCESS_LOG=true $PWD/benches/peers-proxy.sh" ;;
      floor) peers floor "$ROUNDS" "$PWD/benches/peers-floor.sh" ;;
      tls) run tls env PIN=1 ROUNDS="$ROUNDS" DUR=5s STICKYLB_BIN=target/dist/stickylb benches/peers-tls.sh ;;
      *) echo "error: unknown run $which" >&2; exit 2 ;;
    esac
  done
  FROM=$OUT
  echo "# outputs in $OUT" >&2
fi

# row FILE LABEL OURS THEIRS: one table row from one output (64 connections).
row() {
  [ -r "$1" ] || return 0
  awk -v label="$2" -v ours="$3" -v theirs="$4" '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
      if (n == 0) return "-"
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function commas(n,   s) {
      s = sprintf("%d", n)
      while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
      return s
    }
    $2 == "64" && NF == 6 { p99[$1] = p99[$1] " " $5; rps[$1] = rps[$1] " " $3 }
    $1 == "#" && $2 == ours "-64" { med[ours] = $3 }
    $1 == "#" && $2 == theirs "-64" { med[theirs] = $3 }
    END {
      o = (ours in med) ? med[ours] : median(rps[ours]); t = (theirs in med) ? med[theirs] : median(rps[theirs])
      if (o == "" || t == "" || t + 0 == 0) { printf "| %s | (no figures in the output) | | | |\n", label; exit }
      printf "| %s | %s | %s | %.2f | %.1f / %.1f ms |\n", label, commas(o), commas(t), o / t, median(p99[ours]), median(p99[theirs])
    }' "$1"
}

echo "| row | stickylb req/s | HAProxy req/s (same run) | ratio | p99 median, stickylb / HAProxy |"
echo "| --- | --- | --- | --- | --- |"
row "$FROM/memory.txt" "memory store: pinned client" proxy-sticky haproxy-sticky
row "$FROM/memory.txt" "memory store: new session every request" proxy haproxy
row "$FROM/redis.txt" "Redis store: pinned client (local cache hit)" proxy-sticky haproxy-sticky
row "$FROM/redis.txt" "Redis store: new session" proxy haproxy
row "$FROM/log.txt" "access log on (3 rounds): pinned client" proxy-sticky haproxy-sticky
row "$FROM/log.txt" "access log on (3 rounds): new session" proxy haproxy
row "$FROM/tls.txt" "HTTPS: pinned client" proxy-tls-sticky haproxy-tls-sticky
row "$FROM/tls.txt" "HTTPS: new session" proxy-tls haproxy-tls
row "$FROM/floor.txt" "the floor (stickylb's stack, forwarding only): sticky client" proxy-sticky haproxy-sticky
row "$FROM/floor.txt" "the floor: new client" proxy haproxy
[ -z "$FAILED" ] || { echo "# failed:$FAILED" >&2; exit 1; }
