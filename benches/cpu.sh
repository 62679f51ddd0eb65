#!/usr/bin/env bash
# cpu.sh - CPU time per proxied request (user and system, in µs) of HAProxy `cookie insert`,
# stickylb and the stack's floor (examples/floor.rs), in one run:
#
#   cargo build --profile dist --bin stickylb && cargo build --profile dist --example floor
#   ROUNDS=3 benches/cpu.sh            (run as root the first time: it may apt-get)
#   env knobs (defaults): ROUNDS=3 DUR=5s CONNS=16  STICKYLB_BIN  FLOOR_BIN (no floor if absent)
#   REDIS=1 adds a second stickylb on the Redis store (a private redis-server on CPU 0, no
#   persistence) and its rows; the last column is redis-server's CPU µs per request.
#
# requests/s on a shared 2-core VM depends on what else runs on the proxy's CPU; the CPU the
# proxy process itself spends per request (utime and stime from /proc/PID/stat around a wrk
# run, divided by the requests served) says what each request costs it, and splits that into
# its own code (user) and the kernel's (system: loopback TCP). Every proxy runs one thread on
# CPU 0, wrk on CPU 1, one nginx (three servers) floats. Rows: HAProxy with a sticky client
# and with a new client each request, stickylb the same (insert mode, access log off), the
# floor (round robin, no cookie); with REDIS=1 stickylb on the Redis store too. Prints each
# round, then the medians. Loopback only; every process is killed by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5s}; CONNS=${CONNS:-16}
FLOOR_BIN=${FLOOR_BIN:-target/dist/examples/floor}

. benches/lib.sh
ensure_tools wrk nginx curl haproxy taskset
[ "${REDIS:-0}" = 1 ] && ensure_tools redis-server
ensure_binary

workdir cpu
read -r BE1 BE2 BE3 LB HP ADMIN FL < <(free_ports 7)
nginx_backends 'default_type text/plain; return 200 "backend-PORT\n";' "$BE1" "$BE2" "$BE3"
haproxy_cookie_config "$TMP/haproxy.cfg" "127.0.0.1:$HP" "$BE1" "$BE2" "$BE3"
stickylb_bench_config "$TMP/stickylb.toml" "$LB" "$ADMIN" "$BE1" "$BE2" "$BE3"
start haproxy taskset -c 0 haproxy -db -f "$TMP/haproxy.cfg"; HAPROXY_PID=${PIDS[-1]}
start stickylb taskset -c 0 "$STICKYLB_BIN" --config "$TMP/stickylb.toml"; STICKYLB_PID=${PIDS[-1]}
wait_port "$HP" haproxy; wait_port "$LB" stickylb
REDIS_PID=; RED_PID=
if [ "${REDIS:-0}" = 1 ]; then
  read -r LR AR < <(free_ports 2)
  stickylb_bench_config "$TMP/redis.toml" "$LR" "$AR" "$BE1" "$BE2" "$BE3"
  redis_store "$TMP/redis.toml" redis 0
  start stickylb-redis taskset -c 0 "$STICKYLB_BIN" --config "$TMP/redis.toml"; RED_PID=${PIDS[-1]}
  wait_port "$LR" stickylb-redis
fi
FLOOR_PID=
if [ -x "$FLOOR_BIN" ]; then
  start floor taskset -c 0 "$FLOOR_BIN" "127.0.0.1:$FL" "127.0.0.1:$BE1,127.0.0.1:$BE2,127.0.0.1:$BE3"
  FLOOR_PID=${PIDS[-1]}; wait_port "$FL" floor
else
  echo "# no floor: $FLOOR_BIN missing (cargo build --profile dist --example floor)"
fi
COOKIE=$(stickylb_cookie "$LB")
[ -n "$COOKIE" ] || { echo "ERROR: no STICKYLB cookie set" >&2; exit 1; }
[ -z "$RED_PID" ] || RED_COOKIE=$(stickylb_cookie "$LR")
TICK=$(getconf CLK_TCK)

# row NAME PID URL [wrk args]: one warm-up second, then a measured run; prints
# NAME req/s user_µs sys_µs redis_µs (per request; redis: redis-server's CPU in the Redis store's
# rows, 0 in the others).
cpu_ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
row() {
  local name=$1 pid=$2 url=$3 u0 s0 u1 s1 r0 r1 out n rps rp=; shift 3
  [[ $name == *redis* ]] && rp=$REDIS_PID
  taskset -c 1 wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat"); r0=$(cpu_ticks "$rp")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" "$@" "$url")
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat"); r1=$(cpu_ticks "$rp")
  n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
  awk -v name="$name" -v rps="$rps" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v dr=$((r1 - r0)) -v t="$TICK" \
    'BEGIN { printf "%-20s %8d %8.2f %8.2f %8.2f\n", name, rps, du * 1e6 / t / n, ds * 1e6 / t / n, dr * 1e6 / t / n }'
}

printf '%-20s %8s %8s %8s %8s\n' row req/s user_us sys_us redis_us | tee "$TMP/rows"
for r in $(seq "$ROUNDS"); do
  echo "# round $r/$ROUNDS"
  {
    row haproxy-sticky "$HAPROXY_PID" "http://127.0.0.1:$HP/" -H 'Cookie: SRV=s1'
    row stickylb-pinned "$STICKYLB_PID" "http://127.0.0.1:$LB/" -H "Cookie: $COOKIE"
    [ -z "$RED_PID" ] || row stickylb-redis-pinned "$RED_PID" "http://127.0.0.1:$LR/" -H "Cookie: $RED_COOKIE"
    [ -z "$FLOOR_PID" ] || row floor "$FLOOR_PID" "http://127.0.0.1:$FL/"
    row haproxy-new "$HAPROXY_PID" "http://127.0.0.1:$HP/"
    row stickylb-new "$STICKYLB_PID" "http://127.0.0.1:$LB/"
    [ -z "$RED_PID" ] || row stickylb-redis-new "$RED_PID" "http://127.0.0.1:$LR/"
  } | tee -a "$TMP/rows"
done
echo "# medians over $ROUNDS rounds: row req/s user_us sys_us redis_us total_us"
awk 'NR > 1 && !/^#/ { k = $1; c = ++n[k]; r[k, c] = $2; u[k, c] = $3; s[k, c] = $4; d[k, c] = $5 }
  function med(a, k, c,   i, j, v, t) {
    for (i = 1; i <= c; i++) v[i] = a[k, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
  }
  END {
    for (k in n) {
      c = n[k]
      printf "#   %-20s %8d %8.2f %8.2f %8.2f %8.2f\n", k, med(r, k, c), med(u, k, c), med(s, k, c), med(d, k, c),
        med(u, k, c) + med(s, k, c) + med(d, k, c)
    }
  }' "$TMP/rows" | sort
