#!/usr/bin/env bash
# peers-tls.sh - peers.sh over HTTPS: HAProxy (1 thread, `bind ... ssl crt`, `cookie SRV insert
# indirect nocache`) against stickylb with [server.tls], both terminating TLS in front of the
# same three nginx backends (plain HTTP), measured with keep-alive wrk. Loopback only.
#
#   cargo build --profile dist
#   benches/peers-tls.sh
#   DUR=10s ROUNDS=5 CONNS="64 256" benches/peers-tls.sh
#
# Knobs as peers.sh: DUR (10s), WARM (2s), CONNS ("64"), PIN (1: wrk on CPU 1, proxies on CPU 0,
# backends float), ROUNDS (1; >1 = interleaved rounds, medians); STICKYLB_BIN (a binary instead
# of target/dist/stickylb, built if missing).
# Rows: haproxy-tls (no cookie: HAProxy inserts SRV each time), haproxy-tls-sticky (Cookie:
# SRV=s1), proxy-tls (no cookie: a new stickylb session per request), proxy-tls-sticky (the
# STICKYLB cookie stickylb set on a first request, fetched with curl -k).
# The certificate is a throwaway self-signed P-256 one made with openssl in the temp dir; wrk
# keeps its connections, so the figures are about record encryption, not handshakes.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DUR=${DUR:-10s}; WARM=${WARM:-2s}; CONNS=${CONNS:-64}; PIN=${PIN:-1}; ROUNDS=${ROUNDS:-1}
NCPU=$(nproc); ALL="0-$((NCPU - 1))"
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then WRK_CPU=1; PX_CPU=0; else PIN=0; WRK_CPU=$ALL; PX_CPU=$ALL; fi

ensure_tools wrk haproxy nginx curl openssl
ensure_binary
workdir peers-tls
read -r B1 B2 B3 HA PX ADM <<<"$(free_ports 6)"
echo "# $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2) | $(haproxy -v | head -1 | cut -d' ' -f1-3) | $(nginx -v 2>&1) | $(openssl version | cut -d' ' -f1-2)"
echo "# cpus=$NCPU pin=$PIN (wrk cpu $WRK_CPU, proxies cpu $PX_CPU, backends $ALL) dur=$DUR warm=$WARM conns=$CONNS"

# ---- certificate: P-256, CN and SAN 127.0.0.1; HAProxy wants cert + key in one file ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.log"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

# ---- backends: one nginx, three ports, body "backend-PORT" ----
nginx_backends 'default_type text/plain; return 200 "backend-PORT\n";' "$B1" "$B2" "$B3"
wait_port "$B2" nginx; wait_port "$B3" nginx

# ---- HAProxy, 1 thread, TLS on the frontend ----
haproxy_cookie_config "$TMP/haproxy.cfg" "127.0.0.1:$HA ssl crt $TMP/haproxy.pem" "$B1" "$B2" "$B3"
haproxy -c -q -f "$TMP/haproxy.cfg"
start haproxy taskset -c "$PX_CPU" haproxy -db -f "$TMP/haproxy.cfg"

# ---- stickylb through peers-proxy.sh, [server.tls] with the same certificate ----
start proxy env BACKENDS="127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3" LISTEN="127.0.0.1:$PX" \
  ADMIN="127.0.0.1:$ADM" TLS_CERT="$TMP/cert.pem" TLS_KEY="$TMP/key.pem" STICKYLB_BIN="$STICKYLB_BIN" \
  taskset -c "$PX_CPU" benches/peers-proxy.sh
wait_port "$HA" haproxy; wait_port "$PX" proxy

get() { # port [cookie] -> "backend-N [SRV=... or STICKYLB=... route if a cookie was set]"
  local r
  r=$(curl -sk -m 2 -D - ${2:+-H "Cookie: $2"} "https://127.0.0.1:$1/" | tr -d '\r') || true
  echo "$(tail -1 <<<"$r") $(grep -io 'set-cookie: [^=]*=[^;]*' <<<"$r" | cut -d' ' -f2 | sed 's/=.*~/=..~/')"
}
cipher() { openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null | grep -m1 -o 'Cipher is .*' || echo "no TLS?"; }
echo "# tls haproxy: $(cipher "$HA") | proxy: $(cipher "$PX")"
echo "# check haproxy-tls (no cookie x3): $(get "$HA") | $(get "$HA") | $(get "$HA") || SRV=s2 x2: $(get "$HA" SRV=s2) | $(get "$HA" SRV=s2)"
echo "# check proxy-tls (no cookie x3): $(get "$PX") | $(get "$PX") | $(get "$PX")"
PROXY_COOKIE=$(curl -sk -m 2 -o /dev/null -D - "https://127.0.0.1:$PX/" | tr -d '\r' |
  sed -n 's/^[Ss]et-[Cc]ookie: *\([^;]*\).*/\1/p' | head -1)
[ -n "$PROXY_COOKIE" ] || { echo "ERROR: stickylb set no cookie over HTTPS; log:" >&2; cat "$TMP/proxy.log" >&2; exit 1; }
echo "# proxy sticky cookie: $PROXY_COOKIE -> $(get "$PX" "$PROXY_COOKIE") | $(get "$PX" "$PROXY_COOKIE")"

# ---- wrk runs (as peers.sh) ----
declare -A RPS ALL_RPS
bench() { # name url conns [wrk args...]
  local name=$1 url=$2 c=$3 row; shift 3
  taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"$WARM" "$@" "$url" >/dev/null 2>&1 || true
  taskset -c "$WRK_CPU" wrk -t1 -c"$c" -d"$DUR" --latency "$@" "$url" >"$TMP/wrk.out" 2>&1 || true
  row=$(awk -v n="$name" -v c="$c" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
    /^Requests\/sec/ { rps = $2 }  /Non-2xx/ { err += $NF }
    /Socket errors/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    END { printf "%-19s %5s %9.0f %9.3f %9.3f %6d", n, c, rps, p50, p99, err }' "$TMP/wrk.out")
  echo "$row"; RPS[$name-$c]=$(awk '{print $3}' <<<"$row")
}
ratio() { awk -v a="${RPS[$1]:-0}" -v b="${RPS[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

printf '%-19s %5s %9s %9s %9s %6s\n' target conns rps p50_ms p99_ms errors
for r in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "# round $r/$ROUNDS"
  for c in $CONNS; do
    bench haproxy-tls        "https://127.0.0.1:$HA/" "$c"
    bench haproxy-tls-sticky "https://127.0.0.1:$HA/" "$c" -H 'Cookie: SRV=s1'
    bench proxy-tls          "https://127.0.0.1:$PX/" "$c"
    bench proxy-tls-sticky   "https://127.0.0.1:$PX/" "$c" -H "Cookie: $PROXY_COOKIE"
  done
  for k in "${!RPS[@]}"; do ALL_RPS[$k]="${ALL_RPS[$k]:-} ${RPS[$k]}"; done
done
if [ "$ROUNDS" -gt 1 ]; then  # medians across rounds become the figures the ratios use
  echo "# medians over $ROUNDS rounds (rps):"
  for k in "${!ALL_RPS[@]}"; do
    RPS[$k]=$(tr ' ' '\n' <<<"${ALL_RPS[$k]}" | sed '/^$/d' | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
  done
  for k in $(printf '%s\n' "${!RPS[@]}" | sort); do echo "#   $k ${RPS[$k]}"; done
fi
echo
for c in $CONNS; do
  echo "# ratios c=$c: proxy-tls/haproxy-tls=$(ratio "proxy-tls-$c" "haproxy-tls-$c")" \
    "proxy-tls-sticky/haproxy-tls-sticky=$(ratio "proxy-tls-sticky-$c" "haproxy-tls-sticky-$c")"
done
