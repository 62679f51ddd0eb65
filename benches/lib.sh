# lib.sh - shared by the benchmark scripts (sourced, not run).

# ensure_tools CMD...: install the Debian packages of the missing commands (nginx comes from
# nginx-light); needs root the first time.
ensure_tools() {
  local t need=()
  for t in "$@"; do
    command -v "$t" >/dev/null || need+=("$([ "$t" = nginx ] && echo nginx-light || echo "$t")")
  done
  if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# ensure_binary: STICKYLB_BIN, or target/release/stickylb built now.
ensure_binary() {
  if [ -z "${STICKYLB_BIN:-}" ]; then
    cargo build --release --quiet
    STICKYLB_BIN=target/release/stickylb
  fi
}
