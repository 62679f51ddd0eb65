#!/usr/bin/env bash
# ab.sh - two (or more) stickylb builds beside HAProxy `cookie insert` in one run, interleaved,
# for a change whose effect is smaller than this VM's run-to-run spread:
#
#   benches/ab.sh OLD_BINARY NEW_BINARY [...]      (run as root the first time: it may apt-get)
#   env knobs (defaults): ROUNDS=7 DUR=4 CONNS=64 WL="pin new"
#   REDIS=1: every build on the Redis store, each with a redis-server of its own on CPU 0 (its
#   CPU is not in the user/sys figures, which are the proxy's)
#   FLOOR=path: also the floor (examples/floor.rs, e.g. target/dist/examples/floor: the stack
#   with nothing but forwarding) in every round, after the builds (FLOOR_AT=first: before
#   them), as rows floor-pin/floor-new: the stack's own ratio to HAProxy in the same rounds
#
# Layout as peers.sh with PIN=1: HAProxy (one thread) and every stickylb (default config, insert
# mode, round robin, access log off) on CPU 0, wrk on CPU 1, one nginx with two workers and three
# servers floating. Each round runs, per workload (pin: a client that keeps its cookie; new: no
# cookie), HAProxy then each build in the order given, 1 s warm-up + DUR s. Prints a line per
# run (req/s, the proxy's user and system µs per request from /proc/PID/stat, p99), then the
# medians and each build's ratio to HAProxy. Swap the order of the builds in a second run:
# the position in a round can matter by a few percent. Loopback only; every process is
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 1)) || { echo "usage: benches/ab.sh BINARY [BINARY...]" >&2; exit 2; }
BINS=("$@"); ROUNDS=${ROUNDS:-7}; DUR=${DUR:-4}; CONNS=${CONNS:-64}; WL=${WL:-pin new}
case ${FLOOR_AT:-last} in first|last) ;; *) echo "error: FLOOR_AT must be first or last" >&2; exit 2;; esac
[ -z "${FLOOR:-}" ] || [ -x "$FLOOR" ] || { echo "error: FLOOR=$FLOOR is not an executable (cargo build --profile dist --example floor)" >&2; exit 2; }

. benches/lib.sh
ensure_tools wrk nginx curl haproxy taskset
[ "${REDIS:-0}" = 1 ] && ensure_tools redis-server
workdir ab
read -r BE1 BE2 BE3 HP < <(free_ports 4)
servers=""
for p in "$BE1" "$BE2" "$BE3"; do
  servers+="server { listen 127.0.0.1:$p backlog=4096; default_type text/plain; location / { return 200 \"backend-$p\\n\"; } }
"
done
cat >"$TMP/nginx.conf" <<CONF
daemon off; pid $TMP/nginx.pid; error_log $TMP/nginx.err warn; worker_processes 2;
events { worker_connections 8192; }
http { access_log off; keepalive_timeout 65; keepalive_requests 1000000; client_body_temp_path $TMP/b; proxy_temp_path $TMP/p;
$servers}
CONF
start nginx nginx -e "$TMP/nginx.err" -p "$TMP" -c "$TMP/nginx.conf"
wait_port "$BE1" nginx
haproxy_cookie_config "$TMP/haproxy.cfg" "127.0.0.1:$HP" "$BE1" "$BE2" "$BE3"
start haproxy taskset -c 0 haproxy -db -f "$TMP/haproxy.cfg"; HP_PID=${PIDS[-1]}
wait_port "$HP" haproxy

LB_PID=(); LB_PORT=(); LB_COOKIE=()
for k in "${!BINS[@]}"; do
  read -r port admin < <(free_ports 2)
  cat >"$TMP/lb$k.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[session]
mode = "insert"
secret = "ab-benchmark-secret-not-for-production-0123456789"
[balance]
algorithm = "round_robin"
[admin]
listen = "127.0.0.1:$admin"
[log]
level = "warn"
access_log = false
TOML
  i=0
  for p in "$BE1" "$BE2" "$BE3"; do
    i=$((i + 1)); printf '[[backend]]\nname = "s%s"\naddress = "127.0.0.1:%s"\n' "$i" "$p" >>"$TMP/lb$k.toml"
  done
  [ "${REDIS:-0}" = 1 ] && redis_store "$TMP/lb$k.toml" "redis$k" 0
  start "lb$k" taskset -c 0 "${BINS[$k]}" --config "$TMP/lb$k.toml"
  LB_PID+=("${PIDS[-1]}"); LB_PORT+=("$port")
  wait_port "$port" "lb$k"
  LB_COOKIE+=("$(stickylb_cookie "$port")")
  [ -n "${LB_COOKIE[-1]}" ] || { echo "ERROR: ${BINS[$k]} set no STICKYLB cookie" >&2; exit 1; }
done
if [ -n "${FLOOR:-}" ]; then
  read -r FLOOR_PORT < <(free_ports 1)
  start floor taskset -c 0 "$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BE1,127.0.0.1:$BE2,127.0.0.1:$BE3"
  FLOOR_PID=${PIDS[-1]}
  wait_port "$FLOOR_PORT" floor
fi
TICK=$(getconf CLK_TCK)

# run NAME PID URL [wrk args]: one line, NAME rps N user U sys S p99 P.
run() {
  local name=$1 pid=$2 url=$3 u0 s0 u1 s1 out n p99; shift 3
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$@" "$url")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$(awk '/requests in/ {print $1}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  awk -v nm="$name" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$TICK" -v d="$DUR" -v p="$p99" \
    'BEGIN { printf "%-12s rps %6d user %5.2f sys %5.2f p99 %s\n", nm, n / d, u * 1e6 / t / n, s * 1e6 / t / n, p }'
}

# run_floor WORKLOAD: the floor's row, if FLOOR is set. It forwards any cookie untouched: the pin
# row sends stickylb's, so its requests are the same bytes as the first build's.
run_floor() {
  [ -n "${FLOOR:-}" ] || return 0
  if [ "$1" = pin ]; then run floor-pin "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/" -H "Cookie: ${LB_COOKIE[0]}"
  else run floor-new "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/"; fi
}

for r in $(seq "$ROUNDS"); do
  echo "# round $r/$ROUNDS"
  for w in $WL; do
    if [ "$w" = pin ]; then run hp-pin "$HP_PID" "http://127.0.0.1:$HP/" -H 'Cookie: SRV=s1'
    else run hp-new "$HP_PID" "http://127.0.0.1:$HP/"; fi
    [ "${FLOOR_AT:-last}" = first ] && run_floor "$w"
    for k in "${!BINS[@]}"; do
      if [ "$w" = pin ]; then run "b$k-pin" "${LB_PID[$k]}" "http://127.0.0.1:${LB_PORT[$k]}/" -H "Cookie: ${LB_COOKIE[$k]}"
      else run "b$k-new" "${LB_PID[$k]}" "http://127.0.0.1:${LB_PORT[$k]}/"; fi
    done
    [ "${FLOOR_AT:-last}" = first ] || run_floor "$w"
  done
done | tee "$TMP/rows"

echo "# medians over $ROUNDS rounds (b0 = ${BINS[0]}${BINS[1]:+, b1 = ${BINS[1]}})"
python3 - "$TMP/rows" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) >= 9 and p[1] == "rps":
        p99 = float(p[8][:-2]) if p[8].endswith("ms") else float(p[8][:-2]) / 1000 if p[8].endswith("us") else float(p[8][:-1]) * 1000
        rows[p[0]].append((float(p[2]), float(p[4]), float(p[6]), p99))
med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in rows.items()}
for k in sorted(med):
    r, u, s, p = med[k]
    hp = med.get("hp-" + k.split("-")[1])
    ratio = f"  ratio {r / hp[0]:.3f}" if hp and not k.startswith("hp") else ""
    print(f"#   {k:8s} req/s {r:8.0f}  user {u:5.2f} sys {s:5.2f} total {u + s:5.2f} us  p99 {p:6.2f} ms{ratio}")
PY
