#!/usr/bin/env bash
# peers-floor.sh - runs examples/floor.rs (stickylb's stack with nothing but forwarding: the
# floor any stickylb feature is measured from) as the "proxy under test" of peers.sh:
#
#   cargo build --profile dist --example floor
#   PROXY_CMD="$PWD/benches/peers-floor.sh" PROXY_ADDR=127.0.0.1:8090 bash ../shared/bench/peers.sh
#
# $BACKENDS (exported by peers.sh) are its backends, $LISTEN (127.0.0.1:8090) its address.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BACKENDS:?set BACKENDS=host:port,host:port,...}"
bin=${FLOOR_BIN:-target/dist/examples/floor}
[ -x "$bin" ] || { echo "error: $bin missing: run cargo build --profile dist --example floor first" >&2; exit 1; }
exec "$bin" "${LISTEN:-127.0.0.1:8090}" "$BACKENDS"
