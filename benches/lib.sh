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

# ensure_binary: STICKYLB_BIN, or target/dist/stickylb (the shipped build profile) built now.
ensure_binary() {
  if [ -z "${STICKYLB_BIN:-}" ]; then
    cargo build --profile dist --quiet
    STICKYLB_BIN=target/dist/stickylb
  fi
}

# workdir NAME: a temp dir $TMP and a PIDS list; on exit every process started with `start` (its
# whole process group) is stopped and $TMP removed.
workdir() {
  TMP=$(mktemp -d "/tmp/stickylb-$1.XXXXXX"); chmod 755 "$TMP"
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

# start NAME CMD...: run CMD in its own process group, output in $TMP/NAME.log.
start() { local name=$1; shift; setsid "$@" </dev/null >"$TMP/$name.log" 2>&1 & PIDS+=($!); }

# wait_port PORT NAME: until something listens on 127.0.0.1:PORT (30 s), else show NAME's log.
wait_port() {
  local i
  for i in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "ERROR: nothing listens on 127.0.0.1:$1; log:" >&2; cat "$TMP/$2.log" >&2; exit 1
}

# free_ports N: N loopback ports that were free a moment ago, on one line.
free_ports() {
  python3 -c "
import socket
ss = [socket.socket() for _ in range($1)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in ss])"
}

# nginx_backends LOCATION PORT...: one nginx (1 worker, keep-alive) with a server per PORT whose
# `location / { LOCATION }` answers; PORT inside LOCATION is replaced by the server's port.
nginx_backends() {
  local location=$1 servers="" p; shift
  for p in "$@"; do servers+="server { listen 127.0.0.1:$p; location / { ${location//PORT/$p} } }
"; done
  cat >"$TMP/nginx.conf" <<CONF
daemon off; pid $TMP/nginx.pid; error_log $TMP/nginx.err warn; worker_processes 1;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $TMP/b; proxy_temp_path $TMP/p;
$servers}
CONF
  start nginx nginx -e "$TMP/nginx.err" -p "$TMP" -c "$TMP/nginx.conf"
  wait_port "$1" nginx
}

# haproxy_cookie_config FILE BIND BE1 BE2 BE3: HAProxy with one thread, keep-alive both ways,
# round robin and `cookie SRV insert` over three backends (the peer the benchmarks compare with);
# BIND is the frontend's `bind` arguments ("127.0.0.1:PORT", with "ssl crt FILE" for HTTPS).
haproxy_cookie_config() {
  cat >"$1" <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind $2
  default_backend be
backend be
  balance roundrobin
  cookie SRV insert indirect nocache
  server s1 127.0.0.1:$3 cookie s1
  server s2 127.0.0.1:$4 cookie s2
  server s3 127.0.0.1:$5 cookie s3
CFG
}

# stickylb_cookie PORT: the STICKYLB=value pair a new session through stickylb on PORT gets.
stickylb_cookie() {
  curl -s -D - "http://127.0.0.1:$1/" | tr -d '\r' | grep -io 'set-cookie: STICKYLB=[^;]*' | cut -d' ' -f2
}

# stickylb_bench_config FILE LISTEN_PORT ADMIN_PORT BACKEND_PORT...: stickylb with one worker,
# insert mode, access log and health checks off, one backend per port (app1, app2, ...).
stickylb_bench_config() {
  local file=$1 listen=$2 admin=$3 i=0 p; shift 3
  cat >"$file" <<TOML
[server]
listen = "127.0.0.1:$listen"
threads = 1
[session]
mode = "insert"
secret = "benchmark-secret-not-for-production-0123456789abcdef"
[admin]
listen = "127.0.0.1:$admin"
[log]
level = "warn"
access_log = false
[health]
enabled = false
TOML
  for p in "$@"; do
    i=$((i + 1)); printf '[[backend]]\nname = "app%s"\naddress = "127.0.0.1:%s"\n' "$i" "$p" >>"$file"
  done
}

# redis_store FILE NAME [CPUS]: a private redis-server (no persistence; on CPUS when given) for
# the stickylb config FILE, which gets a [cluster] section pointing at it; its PID in REDIS_PID.
redis_store() {
  local file=$1 name=$2 port pin=()
  port=$(free_ports 1)
  [ -n "${3:-}" ] && pin=(taskset -c "$3")
  start "$name" "${pin[@]}" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$TMP" --logfile '' --loglevel warning
  REDIS_PID=${PIDS[-1]}
  wait_port "$port" "$name"
  printf '[cluster]\nstore = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n' "$port" >>"$file"
}
