#!/usr/bin/env bash
# load.sh - end-to-end load benchmark of stickylb on loopback, measured with wrk.
#
#   benches/load.sh                 (from anywhere; run as root the first time: it may apt-get)
#   env knobs (defaults):  DUR=10s  WARM=2s  CONNS=64  THREADS=1 (wrk threads)
#                          PIN=1 -> wrk on CPU1, stickylb on CPU0, backends float (2+ CPUs)
#                          STICKYLB_BIN=path -> use that binary instead of building the dist profile
#
# Starts one nginx with 3 backends (body "backend-N") and target/dist/stickylb in front of
# them (session.mode = insert, access log off), then runs wrk against:
#   direct       one nginx backend, no proxy: the ceiling
#   pinned       stickylb with a valid STICKYLB cookie: table lookup + HMAC check per request
#   new-session  stickylb without a cookie: every request creates a session and a Set-Cookie
# and prints requests/s, p50/p99 latency, errors and the ratio to direct. Loopback only; every
# process started is killed by PID/process group on exit or Ctrl-C; the temp dir is removed.
# On a 2-core machine expect 10-20% run-to-run spread: compare ratios within one run.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd "$(dirname "$0")/.."

DUR=${DUR:-10s}; WARM=${WARM:-2s}; CONNS=${CONNS:-64}; THREADS=${THREADS:-1}; PIN=${PIN:-0}
NCPU=$(nproc); ALL="0-$((NCPU - 1))"
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then WRK_CPU=1; LB_CPU=0; else PIN=0; WRK_CPU=$ALL; LB_CPU=$ALL; fi

# ---- 1. tools and the binary ----
. benches/lib.sh
ensure_tools wrk nginx curl python3
ensure_binary

# ---- process bookkeeping / cleanup ----
TMP=$(mktemp -d /tmp/stickylb-load.XXXXXX); chmod 755 "$TMP"
PIDS=()
alive() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) && [ -n "$s" ] && [ "$s" != Z ]; }
cleanup() {
  trap - EXIT INT TERM
  local p i any
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 50); do
    any=0; for p in "${PIDS[@]}"; do alive "$p" && any=1; done
    [ $any = 0 ] && break; sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
exec 9>&2  # the INT/TERM trap may run while stderr is redirected to a wrk log
trap 'echo "interrupted" >&9; exit 130' INT TERM

start() { # name cpus cmd... ; own session => PID is also the process-group id
  local name=$1 cpus=$2; shift 2
  setsid taskset -c "$cpus" "$@" </dev/null >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_port() { # port name: up to 10s
  local i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "ERROR: $2 did not accept on 127.0.0.1:$1; log:" >&2; cat "$TMP/$2.log" >&2 || true; exit 1
}
# Six distinct free loopback ports (asked of the kernel, then released: fine for a benchmark).
read -r BE1 BE2 BE3 LB ADMIN _ < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
BE_PORTS=("$BE1" "$BE2" "$BE3")

# ---- 2. backends: one nginx instance, 3 ports ----
be_servers=""
for i in 1 2 3; do
  be_servers+="  server { listen 127.0.0.1:${BE_PORTS[i-1]} backlog=4096; default_type text/plain;
    location / { return 200 \"backend-$i\\n\"; } }
"
done
cat >"$TMP/backends.conf" <<EOF
daemon off; pid $TMP/backends.pid; error_log $TMP/backends.err warn;
worker_processes $NCPU;
events { worker_connections 8192; }
http { access_log off; keepalive_timeout 65; keepalive_requests 1000000;
  client_body_temp_path $TMP/be_body; proxy_temp_path $TMP/be_proxy;
$be_servers}
EOF
start backends "$ALL" nginx -e "$TMP/backends.err" -p "$TMP" -c "$TMP/backends.conf"
for p in "${BE_PORTS[@]}"; do wait_port "$p" backends; done

# ---- 3. stickylb ----
cat >"$TMP/stickylb.toml" <<EOF
[server]
listen = "127.0.0.1:$LB"
[session]
mode = "insert"
cookie = "STICKYLB"
secret = "load-benchmark-secret-not-for-production-0123456789"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
level = "warn"
access_log = false
EOF
for i in 1 2 3; do
  printf '[[backend]]\nname = "app%s"\naddress = "127.0.0.1:%s"\n' "$i" "${BE_PORTS[i-1]}" >>"$TMP/stickylb.toml"
done
start stickylb "$LB_CPU" "$STICKYLB_BIN" --config "$TMP/stickylb.toml"
wait_port "$LB" stickylb
LB_PID=${PIDS[-1]}

get() { # [cookie] -> "body [STICKYLB=... if one was set]"
  local r
  r=$(curl -s -m 2 -D - ${1:+-H "Cookie: $1"} "http://127.0.0.1:$LB/" | tr -d '\r') || true
  echo "$(tail -1 <<<"$r") $(grep -io 'set-cookie: STICKYLB=[^;]*' <<<"$r" | cut -d' ' -f2)"
}
first=$(get)
COOKIE=$(cut -d' ' -f2 <<<"$first")
if [ -z "$COOKIE" ]; then
  echo "ERROR: stickylb set no STICKYLB cookie; answer: $first" >&2; cat "$TMP/stickylb.log" >&2; exit 1
fi
echo "# $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2) | $(nginx -v 2>&1) | $("$STICKYLB_BIN" --version 2>&1 | head -1)"
echo "# cpus=$NCPU pin=$PIN (wrk cpu $WRK_CPU, stickylb cpu $LB_CPU) dur=$DUR warm=$WARM conns=$CONNS threads=$THREADS"
echo "# check no cookie: $first | $(get) || pinned: $(get "$COOKIE" | cut -d' ' -f1) | $(get "$COOKIE" | cut -d' ' -f1)"

# ---- 4. wrk runs ----
secs() { case $1 in *ms) echo 1 ;; *s) echo "${1%s}" ;; *m) echo $((${1%m} * 60)) ;; *h) echo $((${1%h} * 3600)) ;; *) echo "$1" ;; esac; }
LIMIT=$(($(secs "$DUR") + $(secs "$WARM") + 30))  # hard bound per wrk run, seconds
wrk_run() { taskset -c "$WRK_CPU" timeout -k 5 "$LIMIT" wrk -t"$THREADS" -c"$CONNS" "$@"; }
DIRECT=0
bench() { # name url [wrk args...]
  local name=$1 url=$2 row; shift 2
  wrk_run -d"$WARM" "$@" "$url" >/dev/null 2>&1 || true
  wrk_run -d"$DUR" --latency "$@" "$url" >"$TMP/wrk.out" 2>&1 || true
  row=$(awk -v n="$name" -v c="$CONNS" -v d="$DIRECT" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 }  /Non-2xx/ { err += $NF }
    /Socket errors/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    END { r = (d > 0) ? sprintf("%.2f", rps / d) : "1.00"
          printf "%-12s %5s %9.0f %9.3f %9.3f %6d %9s", n, c, rps, p50, p99, err, r }' "$TMP/wrk.out")
  echo "$row"
  [ "$DIRECT" != 0 ] || DIRECT=$(awk '{print $3}' <<<"$row")
}
printf '%-12s %5s %9s %9s %9s %6s %9s\n' target conns rps p50_ms p99_ms errors vs_direct
bench direct "http://127.0.0.1:$BE1/"
bench pinned "http://127.0.0.1:$LB/" -H "Cookie: $COOKIE"
bench new-session "http://127.0.0.1:$LB/"
echo "# stickylb peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$LB_PID/status" 2>/dev/null || echo n/a)"
