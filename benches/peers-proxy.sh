#!/usr/bin/env bash
# peers-proxy.sh - runs the release stickylb as the "proxy under test" of peers.sh:
#
#   cargo build --release
#   PROXY_CMD="$PWD/benches/peers-proxy.sh" PROXY_ADDR=127.0.0.1:8090 bash ../shared/bench/peers.sh
#
# Turns $BACKENDS (comma-separated host:port list, exported by peers.sh) into a config
# (insert-mode cookie STICKYLB, round_robin like the HAProxy peer, access log off) and execs
# target/release/stickylb (or $STICKYLB_BIN) on $LISTEN (default 127.0.0.1:8090), admin on
# $ADMIN (127.0.0.1:8091).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BACKENDS:?set BACKENDS=host:port,host:port,...}"
LISTEN=${LISTEN:-127.0.0.1:8090}; ADMIN=${ADMIN:-127.0.0.1:8091}
bin=${STICKYLB_BIN:-target/release/stickylb}
[ -x "$bin" ] || { echo "error: $bin missing: run cargo build --release first" >&2; exit 1; }

cfg=target/peers-proxy.toml  # rewritten on every run; target/ is not committed
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
access_log = false
TOML
i=0
IFS=, read -ra addrs <<<"$BACKENDS"
for a in "${addrs[@]}"; do
  i=$((i + 1))
  printf '[[backend]]\nname = "s%s"\naddress = "%s"\n' "$i" "$a" >>"$cfg"
done
exec "$bin" --config "$cfg"
