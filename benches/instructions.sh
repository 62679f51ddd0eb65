#!/usr/bin/env bash
# instructions.sh - CPU instructions per proxied request, counted by valgrind's callgrind.
#
#   benches/instructions.sh            (run as root the first time: it may apt-get)
#   env knobs (defaults): DUR=8s CONNS=16  STICKYLB_BIN=path (else builds the dist profile)
#   KEEP=dir keeps each workload's callgrind dumps there (for callgrind_annotate)
#   REDIS=1 runs stickylb on the Redis store (a private redis-server; pinned = local cache hit,
#   new session = one SET NX each); redis-server's own CPU is not counted
#
# Unlike requests/s, an instruction count is repeatable: the same binary and workload give
# the same figure whatever else the machine is doing, so it can compare two builds on a busy
# 2-core VM. It does not see cache misses or the kernel, so confirm a gain with load.sh or
# peers.sh too. Valgrind's CPU has no SHA extensions: the HMAC share is overstated.
#
# Starts one nginx with 3 backends and stickylb (insert mode) under callgrind, then for the
# pinned and the new-session workload: zero the counters, run wrk, dump, and print
# instructions / requests. Loopback only; every process is killed by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-8s}; CONNS=${CONNS:-16}

. benches/lib.sh
ensure_tools wrk nginx curl valgrind python3
[ "${REDIS:-0}" = 1 ] && ensure_tools redis-server
ensure_binary

workdir instr
read -r BE1 BE2 BE3 LB ADMIN < <(free_ports 5)
nginx_backends 'default_type text/plain; return 200 "backend-PORT\n";' "$BE1" "$BE2" "$BE3"
stickylb_bench_config "$TMP/stickylb.toml" "$LB" "$ADMIN" "$BE1" "$BE2" "$BE3"
[ "${REDIS:-0}" = 1 ] && redis_store "$TMP/stickylb.toml" redis
start stickylb valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$STICKYLB_BIN" --config "$TMP/stickylb.toml"
wait_port "$LB" stickylb
VG_PID=${PIDS[-1]}
COOKIE=$(stickylb_cookie "$LB")
[ -n "$COOKIE" ] || { echo "ERROR: no STICKYLB cookie set" >&2; exit 1; }

measure() { # name [wrk args...]
  local name=$1 n total; shift
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  n=$(timeout 120 wrk -t1 -c"$CONNS" -d"$DUR" "$@" "http://127.0.0.1:$LB/" | awk '/requests in/ {print $1}')
  rm -f "$TMP"/cg.*.[0-9]*
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  total=$(cat "$TMP"/cg.*.[0-9]* 2>/dev/null | awk '/^summary:/ {s += $2} END {print s + 0}')
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && for f in "$TMP"/cg.*.[0-9]*; do cp "$f" "$KEEP/$name.${f##*/}"; done; fi
  printf '%-12s %9s %14s %12s\n' "$name" "$n" "$total" "$((total / (n > 0 ? n : 1)))"
}
printf '%-12s %9s %14s %12s\n' workload requests instructions per_request
measure pinned -H "Cookie: $COOKIE"
measure new-session
