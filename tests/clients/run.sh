#!/usr/bin/env bash
# Real, unmodified Redis client libraries against a steadfast cluster (called by .ci/run):
# an Express app (express-session + connect-redis + node-redis), a Flask app (Flask-Session +
# redis-py) and redis-cli (also as a keyspace-notification subscriber). Each app runs as two instances on two different nodes; a user logs
# in, fills a basket through both instances, reads it through the other one, and logs out;
# then again while a store node is killed (kill -9). Checked: no acknowledged change is lost,
# and a logged-out session never comes back (its old cookie finds nothing on either instance).
#
#   tests/clients/run.sh [path/to/steadfast]     (needs node+npm, python3, redis-cli, curl)
# Installs the libraries from their registries into tests/clients/{express/node_modules,.venv}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/steadfast}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  if [ "${failed:-1}" != 0 ]; then
    for f in "$work"/*.log; do echo "--- $f"; tail -20 "$f"; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
failed=1

for tool in node npm python3 redis-cli curl; do
  command -v "$tool" >/dev/null || { echo "client tests need $tool" >&2; exit 1; }
done
echo "--- installing client libraries from npm and PyPI"
(cd "$here/express" && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x "$here/.venv/bin/python" ]; then python3 -m venv "$here/.venv"; fi
"$here/.venv/bin/pip" install -q flask flask-session redis

base=${CLIENT_TEST_BASE_PORT:-17100}
data() { echo $((base + $1)); }
resp() { echo $((base + 10 + $1)); }
peers="1=127.0.0.1:$(data 1),2=127.0.0.1:$(data 2),3=127.0.0.1:$(data 3)"
declare -A node_pid
start_node() {
  "$bin" serve --id "$1" --listen "127.0.0.1:$(data "$1")" --data-dir "$work/node$1" \
    --peers "$peers" --groups 4 --redis-listen "127.0.0.1:$(resp "$1")" \
    --heartbeat-ms 50 --election-timeout-min-ms 300 --election-timeout-max-ms 600 \
    >"$work/node$1.log" 2>&1 &
  node_pid[$1]=$!
  pids+=($!)
}
for i in 1 2 3; do start_node "$i"; done

wait_for() { # wait_for DESCRIPTION COMMAND...: polls for 60 s
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $what" >&2
  return 1
}
writes_everywhere() {
  for i in 1 2 3; do
    for k in a b c d e f g h; do
      [ "$(redis-cli -p "$(resp "$i")" SET "probe:$k" x)" = OK ] || return 1
    done
  done
}
wait_for "every group to elect a leader" writes_everywhere

check_json() { # check_json JSON PYTHON-EXPRESSION-ON-d
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" \
    || { echo "unexpected answer: $1 (wanted $2)" >&2; return 1; }
}

scenario() { # scenario APP PORT_A PORT_B USER
  local app=$1 a=$2 b=$3 user=$4 jar="$work/$1-$4.jar"
  curl -sf -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$a/login?user=$user" >/dev/null
  local want=()
  for item in book pen ink; do
    curl -sf -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$a/basket?item=$item" >/dev/null
    want+=("$item")
  done
  check_json "$(curl -sf -b "$jar" "http://127.0.0.1:$b/basket")" \
    "d['user']=='$user' and d['basket']==['book','pen','ink']"
  curl -sf -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$b/basket?item=cup" >/dev/null
  check_json "$(curl -sf -b "$jar" "http://127.0.0.1:$a/basket")" \
    "d['user']=='$user' and d['basket']==['book','pen','ink','cup']"
  cp "$jar" "$jar.old"
  curl -sf -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$a/logout" >/dev/null
  for port in "$a" "$b"; do
    check_json "$(curl -sf -b "$jar.old" "http://127.0.0.1:$port/basket")" \
      "d['user'] is None and d['basket']==[]"
  done
  echo "$app: $user logged in, filled a basket on two instances, logged out: ok"
}

start_app() { # start_app NAME PORT NODE
  local name=$1 port=$2 url="redis://127.0.0.1:$(resp "$3")" log="$work/$1-$2.log"
  # Each `( … exec app ) &` is the app's own PID, so cleanup stops the app itself (a PID of a
  # wrapping subshell would leave the app running, holding whatever the script held).
  case $name in
    express) (cd "$here/express" && PORT=$port REDIS_URL=$url exec node app.js) >"$log" 2>&1 & ;;
    flask) (cd "$here/flask" && PORT=$port REDIS_URL=$url exec "$here/.venv/bin/python" app.py) \
      >"$log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_for "$name on $port" curl -sf "http://127.0.0.1:$port/basket"
}

# Apps use nodes 1 and 2; node 3 is the one killed (its groups fail over).
start_app express 18001 1
start_app express 18002 2
start_app flask 18003 1
start_app flask 18004 2

echo "--- redis-cli"
cli() { redis-cli -p "$(resp 1)" "$@"; }
[ "$(cli SET cli:greeting hello EX 600)" = OK ]
[ "$(redis-cli -p "$(resp 2)" GET cli:greeting)" = hello ]
out=$(printf 'MULTI\nHSET cli:cart book 1\nHINCRBY cli:cart book 2\nEXEC\n' | redis-cli -p "$(resp 3)")
[ "$(echo "$out" | tail -2 | tr '\n' ' ')" = "1 3 " ] || { echo "MULTI/EXEC: $out" >&2; exit 1; }
[ "$(redis-cli -3 -p "$(resp 2)" HGET cli:cart book)" = 3 ]
[ "$(cli --scan --pattern 'cli:*' | sort | tr '\n' ' ')" = "cli:cart cli:greeting " ]
echo "redis-cli: SET/GET on two nodes, MULTI/EXEC, RESP3, --scan: ok"
# Keyspace notifications: a subscriber on node 1 hears of a DEL through node 2 and of an expiry.
events="$work/events.csv"
redis-cli -p "$(resp 1)" --csv SUBSCRIBE __keyevent@0__:del __keyevent@0__:expired >"$events" &
sub_pid=$!
pids+=($sub_pid)
wait_for "the subscription" grep -q '"subscribe","__keyevent@0__:expired",2' "$events"
[ "$(redis-cli -p "$(resp 2)" SET cli:gone x)" = OK ]
[ "$(redis-cli -p "$(resp 2)" DEL cli:gone)" = 1 ]
[ "$(redis-cli -p "$(resp 3)" SET cli:short x PX 300)" = OK ]
wait_for "the del notification" grep -q '"message","__keyevent@0__:del","cli:gone"' "$events"
wait_for "the expired notification" \
  grep -q '"message","__keyevent@0__:expired","cli:short"' "$events"
{ kill "$sub_pid" && wait "$sub_pid"; } 2>/dev/null || true
echo "redis-cli: SUBSCRIBE to del and expired notifications: ok"

echo "--- every node up"
scenario express 18001 18002 ann
scenario flask 18003 18004 bob

echo "--- node 3 killed"
{ kill -9 "${node_pid[3]}" && wait "${node_pid[3]}"; } 2>/dev/null || true
scenario express 18001 18002 carol
scenario flask 18003 18004 dave
[ "$(cli GET cli:greeting)" = hello ]
echo "client libraries: all scenarios passed"
failed=0
