#!/usr/bin/env bash
# soap.sh - end-to-end cost of SOAP-level sessions: the same SOAP workload (POST of a ~1 KB
# envelope carrying an Axis2 ServiceGroupId, XML answers from nginx backends) through stickylb
# with session.mode = "soap" and with session.mode = "none", alternating, ROUNDS times.
#
#   benches/soap.sh              env knobs (defaults): DUR=5s CONNS=32 ROUNDS=3 STICKYLB_BIN=path
#
# Prints requests/s per round and the median ratio soap / none. Loopback only; every process
# started is killed by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5s}; CONNS=${CONNS:-32}; ROUNDS=${ROUNDS:-3}
. benches/lib.sh
ensure_tools wrk nginx curl python3
ensure_binary

workdir soap
read -r BE1 BE2 BE3 LB_SOAP ADM_SOAP LB_NONE ADM_NONE < <(free_ports 7)
REPLY='<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header/><soapenv:Body><r>ok</r></soapenv:Body></soapenv:Envelope>'
nginx_backends "default_type text/xml; return 200 '$REPLY';" "$BE1" "$BE2" "$BE3"
run_lb() { # mode listen admin
  cat >"$TMP/$1.toml" <<CONF
[server]
listen = "127.0.0.1:$2"
threads = 1
[session]
mode = "$1"
[admin]
listen = "127.0.0.1:$3"
[log]
level = "warn"
access_log = false
[health]
enabled = false
CONF
  local i=0 p
  for p in "$BE1" "$BE2" "$BE3"; do
    i=$((i + 1)); printf '[[backend]]\nname = "app%s"\naddress = "127.0.0.1:%s"\n' "$i" "$p" >>"$TMP/$1.toml"
  done
  start "$1" "$STICKYLB_BIN" --config "$TMP/$1.toml"
  wait_port "$3" "$1"
}
run_lb soap "$LB_SOAP" "$ADM_SOAP"
run_lb none "$LB_NONE" "$ADM_NONE"
PAD=$(python3 -c 'print("x" * 700)')
cat >"$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.body = [[<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header><axis2:ServiceGroupId xmlns:axis2="http://ws.apache.org/namespaces/axis2">urn:uuid:0123456789abcdef0123456789abcdef</axis2:ServiceGroupId></soapenv:Header><soapenv:Body><m:echo xmlns:m="urn:bench">$PAD</m:echo></soapenv:Body></soapenv:Envelope>]]
LUA
rps() { wrk -t1 -c"$CONNS" -d"$DUR" -s "$TMP/post.lua" "http://127.0.0.1:$1/services/Echo" | awk '/Requests\/sec/ { print int($2) }'; }
echo "round soap_rps none_rps ratio"
ratios=()
for r in $(seq "$ROUNDS"); do
  s=$(rps "$LB_SOAP"); n=$(rps "$LB_NONE")
  ratio=$(python3 -c "print(f'{$s / max($n, 1):.3f}')")
  ratios+=("$ratio")
  echo "$r $s $n $ratio"
done
python3 -c "import statistics,sys; print('median soap/none', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
