#!/usr/bin/env bash
# peers-proxy.sh - runs the dist-profile stickylb as the "proxy under test" of peers.sh:
#
#   cargo build --profile dist
#   PROXY_CMD="$PWD/benches/peers-proxy.sh" PROXY_ADDR=127.0.0.1:8090 bash ../shared/bench/peers.sh
#   PROXY_CMD="STORE=redis $PWD/benches/peers-proxy.sh" PROXY_ADDR=127.0.0.1:8090 bash ../shared/bench/peers.sh
#
# Turns $BACKENDS (comma-separated host:port list, exported by peers.sh) into a config
# (insert-mode cookie STICKYLB, round_robin like the HAProxy peer, access log off) and runs
# target/dist/stickylb (or $STICKYLB_BIN) on $LISTEN (default 127.0.0.1:8090), admin on
# $ADMIN (127.0.0.1:8091).
#
# STORE=memory (default): pins in the process; stickylb is exec'd (it is the process peers.sh
#   started). STORE=redis: a private redis-server (no persistence) on a free loopback port, and
#   `[cluster] store = "redis"` pointed at it. Both then run as children of this script, in its
#   process group: peers.sh's kill of the group stops all three, and a TERM/INT/exit of this
#   script kills both by PID. redis-server inherits this script's CPUs (peers.sh pins the proxy
#   command to CPU 0 with PIN=1) unless REDIS_CPUS (a taskset list, e.g. 1) says otherwise.
# TLS_CERT + TLS_KEY (PEM files): `[server.tls]`, the listener speaks HTTPS (peers-tls.sh).
# ACCESS_LOG=true: the access log on (a JSON line per request to stdout, which peers.sh writes
#   to a file); the compared configuration has it off, as the peers log nothing.
set -euo pipefail
if [ -n "${TLS_CERT:-}${TLS_KEY:-}" ]; then  # before the cd: relative to the caller's directory
  if [ ! -r "${TLS_CERT:-}" ] || [ ! -r "${TLS_KEY:-}" ]; then
    echo "error: TLS_CERT and TLS_KEY must both be readable files" >&2; exit 2
  fi
  TLS_CERT=$(realpath "$TLS_CERT"); TLS_KEY=$(realpath "$TLS_KEY")
fi
cd "$(dirname "$0")/.."
: "${BACKENDS:?set BACKENDS=host:port,host:port,...}"
LISTEN=${LISTEN:-127.0.0.1:8090}; ADMIN=${ADMIN:-127.0.0.1:8091}; STORE=${STORE:-memory}
bin=${STICKYLB_BIN:-target/dist/stickylb}
[ -x "$bin" ] || { echo "error: $bin missing: run cargo build --profile dist first" >&2; exit 1; }
case $STORE in memory|redis) ;; *) echo "error: STORE must be memory or redis, not $STORE" >&2; exit 2;; esac

cfg=target/peers-proxy.toml  # rewritten on every run; target/ is not committed
[ "$STORE" = redis ] && cfg=target/peers-proxy-$$.toml  # several may run at once
cat >"$cfg" <<TOML
[server]
listen = "$LISTEN"
[session]
mode = "insert"
cookie = "STICKYLB"
secret = "peers-benchmark-secret-not-for-production-0123456789"
[balance]
algorithm = "round_robin"
[admin]
listen = "$ADMIN"
[log]
level = "warn"
access_log = ${ACCESS_LOG:-false}
TOML
if [ -n "${TLS_CERT:-}" ]; then
  printf '[server.tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_CERT" "$TLS_KEY" >>"$cfg"
fi
i=0
IFS=, read -ra addrs <<<"$BACKENDS"
for a in "${addrs[@]}"; do
  i=$((i + 1))
  printf '[[backend]]\nname = "s%s"\naddress = "%s"\n' "$i" "$a" >>"$cfg"
done
[ "$STORE" = memory ] && exec "$bin" --config "$cfg"

# ---- STORE=redis: redis-server and stickylb as children, both killed by PID ----
. benches/lib.sh
ensure_tools redis-server
rdir=$(mktemp -d /tmp/stickylb-peers-redis.XXXXXX)
pids=()
# shellcheck disable=SC2317 # run by the traps
stop() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$rdir" "$cfg"
}
trap stop EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
rport=$(free_ports 1)
${REDIS_CPUS:+taskset -c "$REDIS_CPUS"} redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
  --dir "$rdir" --logfile '' --loglevel warning --daemonize no </dev/null &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null || { echo "error: redis-server did not listen on $rport" >&2; exit 1; }
printf '[cluster]\nstore = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n' "$rport" >>"$cfg"
echo "peers-proxy: store=redis redis-server pid ${pids[0]} on 127.0.0.1:$rport" >&2
"$bin" --config "$cfg" </dev/null &
pids+=($!)
# Whichever ends first ends the other (the EXIT trap); stickylb's status is ours.
set +e
wait -n "${pids[@]}"
rc=$?
exit "$rc"
