#!/usr/bin/env bash
# cpu.sh - CPU time per proxied request (user and system, in µs) of HAProxy `cookie insert`,
# stickylb and the stack's floor (examples/floor.rs), in one run:
#
#   cargo build --profile dist --bins --example floor
#   ROUNDS=3 benches/cpu.sh            (run as root the first time: it may apt-get)
#   env knobs (defaults): ROUNDS=3 DUR=5s CONNS=16  STICKYLB_BIN  FLOOR_BIN (no floor if absent)
#
# requests/s on a shared 2-core VM depends on what else runs on the proxy's CPU; the CPU the
# proxy process itself spends per request (utime and stime from /proc/PID/stat around a wrk
# run, divided by the requests served) says what each request costs it, and splits that into
# its own code (user) and the kernel's (system: loopback TCP). Every proxy runs one thread on
# CPU 0, wrk on CPU 1, one nginx (three servers) floats. Rows: HAProxy with a sticky client
# and with a new client each request, stickylb the same (insert mode, access log off), the
# floor (round robin, no cookie). Prints each round, then the medians. Loopback only; every
# process is killed by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5s}; CONNS=${CONNS:-16}
FLOOR_BIN=${FLOOR_BIN:-target/dist/examples/floor}

. benches/lib.sh
ensure_tools wrk nginx curl haproxy taskset
ensure_binary

workdir cpu
read -r BE1 BE2 BE3 LB HP ADMIN FL < <(free_ports 7)
nginx_backends 'default_type text/plain; return 200 "backend-PORT\n";' "$BE1" "$BE2" "$BE3"
haproxy_cookie_config "$TMP/haproxy.cfg" "127.0.0.1:$HP" "$BE1" "$BE2" "$BE3"
stickylb_bench_config "$TMP/stickylb.toml" "$LB" "$ADMIN" "$BE1" "$BE2" "$BE3"
start haproxy taskset -c 0 haproxy -db -f "$TMP/haproxy.cfg"; HAPROXY_PID=${PIDS[-1]}
start stickylb taskset -c 0 "$STICKYLB_BIN" --config "$TMP/stickylb.toml"; STICKYLB_PID=${PIDS[-1]}
wait_port "$HP" haproxy; wait_port "$LB" stickylb
FLOOR_PID=
if [ -x "$FLOOR_BIN" ]; then
  start floor taskset -c 0 "$FLOOR_BIN" "127.0.0.1:$FL" "127.0.0.1:$BE1,127.0.0.1:$BE2,127.0.0.1:$BE3"
  FLOOR_PID=${PIDS[-1]}; wait_port "$FL" floor
else
  echo "# no floor: $FLOOR_BIN missing (cargo build --profile dist --example floor)"
fi
COOKIE=$(curl -s -D - "http://127.0.0.1:$LB/" | tr -d '\r' | grep -io 'set-cookie: STICKYLB=[^;]*' | cut -d' ' -f2)
[ -n "$COOKIE" ] || { echo "ERROR: no STICKYLB cookie set" >&2; exit 1; }
TICK=$(getconf CLK_TCK)

# row NAME PID URL [wrk args]: one warm-up second, then a measured run; prints
# NAME req/s user_µs sys_µs (per request).
row() {
  local name=$1 pid=$2 url=$3 u0 s0 u1 s1 out n rps; shift 3
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" "$@" "$url")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
  awk -v name="$name" -v rps="$rps" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v t="$TICK" \
    'BEGIN { printf "%-16s %8d %8.2f %8.2f\n", name, rps, du * 1e6 / t / n, ds * 1e6 / t / n }'
}

printf '%-16s %8s %8s %8s\n' row req/s user_us sys_us | tee "$TMP/rows"
for r in $(seq "$ROUNDS"); do
  echo "# round $r/$ROUNDS"
  {
    row haproxy-sticky "$HAPROXY_PID" "http://127.0.0.1:$HP/" -H 'Cookie: SRV=s1'
    row stickylb-pinned "$STICKYLB_PID" "http://127.0.0.1:$LB/" -H "Cookie: $COOKIE"
    [ -z "$FLOOR_PID" ] || row floor "$FLOOR_PID" "http://127.0.0.1:$FL/"
    row haproxy-new "$HAPROXY_PID" "http://127.0.0.1:$HP/"
    row stickylb-new "$STICKYLB_PID" "http://127.0.0.1:$LB/"
  } | tee -a "$TMP/rows"
done
echo "# medians over $ROUNDS rounds: row req/s user_us sys_us total_us"
awk 'NR > 1 && !/^#/ { n[$1]++; r[$1, n[$1]] = $2; u[$1, n[$1]] = $3; s[$1, n[$1]] = $4 }
  function med(a, k, c,   i, j, v, t) {
    for (i = 1; i <= c; i++) v[i] = a[k, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
  }
  END { for (k in n) printf "#   %-16s %8d %8.2f %8.2f %8.2f\n", k, med(r, k, n[k]), med(u, k, n[k]), med(s, k, n[k]), med(u, k, n[k]) + med(s, k, n[k]) }' \
  "$TMP/rows" | sort
