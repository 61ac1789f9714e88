#!/usr/bin/env bash
# redis-benchmark against a steadfast cluster's RESP listener and against Redis with
# `appendfsync always`, one system at a time, in one run, and prints ratios.
#
#   bench/redis-benchmark.sh [path/to/steadfast]
#   bench/redis-benchmark.sh --summarize OUT_DIR      (the table again, from OUT_DIR/results.tsv)
#
# steadfast: `steadfast up --groups 8 --no-restart` (3 node processes on loopback), the benchmark
# pointed at node 1's RESP port (node 1 forwards keys whose group leader is elsewhere).
# Redis: one `redis-server --appendonly yes --appendfsync always --save ''` (durable on one disk,
# not replicated). Each pass runs, for each system, the same commands:
#   redis-benchmark -t set,get -d 256 -c 64 -n $N -r 100000            (no pipelining)
#   redis-benchmark -t set,get -d 256 -c 64 -n $N -r 100000 -P 16      (16 requests in flight per connection)
# `-r 100000` spreads the keys over 100 k names (without it every request hits one key, so one
# Raft group). Passes alternate the order of the systems. Reported per point: requests/s,
# p50/p99 (redis-benchmark's summary), p99.9 (the first line of its percentile distribution at or
# above 99.9 %), max, and the CPU seconds the server processes used per 1000 requests.
#
# Env: PASSES (2), N (100000), CLIENTS (64), SF_BASE_PORT (17301), SF_REDIS_PORT (17311),
# REDIS_PORT (16393), OUT (a new temporary directory; raw outputs and results.tsv go there),
# BASELINE (another steadfast binary, measured as system `baseline` too: before/after a change).
# Every process this script starts is stopped by PID on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = --summarize ]; then SUMMARIZE_ONLY=$2; set --; fi
src_bin=${1:-$here/../target/release/steadfast}
PASSES=${PASSES:-2} N=${N:-100000} CLIENTS=${CLIENTS:-64}
SF_BASE_PORT=${SF_BASE_PORT:-17301} SF_REDIS_PORT=${SF_REDIS_PORT:-17311}
REDIS_PORT=${REDIS_PORT:-16393}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/redis-bench.XXXXXX")}
mkdir -p "$OUT"
work=$(mktemp -d)
cp "$src_bin" "$work/steadfast" # a concurrent build cannot swap the binary mid-run
systems="steadfast redis"
if [ -n "${BASELINE:-}" ]; then cp "$BASELINE" "$work/baseline"; systems="steadfast redis baseline"; fi
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

wait_until() { # wait_until SECONDS COMMAND...
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

# CPU seconds (user + system) of a process and its children processes, from /proc.
cpu_of() {
  local total=0 p
  for p in "$@" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

start_steadfast() { # start_steadfast BINARY
  rm -rf "$work/sf"
  "$work/$1" up --data-dir "$work/sf" --groups 8 --no-restart \
    --base-port "$SF_BASE_PORT" --redis-base-port "$SF_REDIS_PORT" >"$OUT/steadfast-up.log" 2>&1 &
  server_pid=$!
  port=$SF_REDIS_PORT
  # Ready when a write lands in every group: SETs of many keys all succeed.
  sets_everywhere() {
    for k in $(seq 1 32); do [ "$(redis-cli -p "$port" SET "probe:$k" x)" = OK ] || return 1; done
  }
  wait_until 90 sets_everywhere || { tail -20 "$OUT/steadfast-up.log" >&2; return 1; }
}

start_redis() {
  rm -rf "$work/redis" && mkdir -p "$work/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize no --logfile "$work/redis.log" &
  server_pid=$!
  port=$REDIS_PORT
  wait_until 30 bash -c "[ \"\$(redis-cli -p $port PING)\" = PONG ]"
}

# One redis-benchmark run; appends a result row per test.
point() { # point PASS SYSTEM PIPELINE
  local pass=$1 sys=$2 pipe=$3 raw="$OUT/$2-pass$1-P$3.txt" before after
  local cmd=(redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -d 256 -c "$CLIENTS" -n "$N"
    -r 100000 -P "$pipe")
  echo "$(date -u +%T) pass $pass $sys -P $pipe (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  before=$(cpu_of "$server_pid")
  "${cmd[@]}" >"$raw" 2>&1
  after=$(cpu_of "$server_pid")
  python3 - "$raw" "$pass" "$sys" "$pipe" $(((after - before))) "$(getconf CLK_TCK)" \
    "$N" >>"$OUT/results.tsv" <<'EOF'
import re, sys
raw, pas, system, pipe, ticks, hz, n = sys.argv[1:]
text = open(raw, errors="replace").read().replace("\r", "\n")
# One section per test: "====== SET ======" ... "throughput summary: X requests per second"
for name, body in re.findall(r"====== (\w+) ======(.*?)(?======|\Z)", text, re.S):
    rps = re.search(r"throughput summary: ([\d.]+) requests per second", body)
    summ = re.search(r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+"
                     r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", body)
    if not (rps and summ):
        continue
    p999 = None
    for pct, ms in re.findall(r"([\d.]+)% <= ([\d.]+) milliseconds", body):
        if float(pct) >= 99.9:
            p999 = ms
            break
    # The server CPU covers both tests of the run; split it by request count (equal).
    cpu_ms_per_k = float(ticks) / float(hz) / 2 * 1000 / (float(n) / 1000)
    print("\t".join([pas, system, pipe, name, rps.group(1), summ.group(3), summ.group(5),
                     p999 or "NA", summ.group(6), f"{cpu_ms_per_k:.1f}"]))
EOF
}

run_system() { # run_system PASS SYSTEM
  case $2 in
    steadfast|baseline) start_steadfast "$2" ;;
    redis) start_redis ;;
  esac
  point "$1" "$2" 1
  point "$1" "$2" 16
  stop_server
}

# The table: medians over the passes; ratios taken within each pass (median and range).
summarize() {
  python3 - "$1" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def vals(sys_, pipe, test, col):
    return {r["pass"]: float(r[col]) for r in rows
            if (r["system"], r["pipeline"], r["test"]) == (sys_, pipe, test) and r[col] != "NA"}
def med(sys_, pipe, test, col):
    v = list(vals(sys_, pipe, test, col).values())
    return statistics.median(v) if v else float("nan")
def ratio(a, b, pipe, test):
    x, y = vals(a, pipe, test, "rps"), vals(b, pipe, test, "rps")
    r = [x[p] / y[p] for p in x if p in y]
    return f"**{statistics.median(r):.2f}x** ({min(r):.2f}–{max(r):.2f})" if r else "NA"
def lat(sys_, pipe, test):
    return " / ".join(f"{med(sys_, pipe, test, c):g}" for c in ("p50_ms", "p99_ms", "p999_ms", "max_ms"))
others = [s for s in ("redis", "baseline") if any(r["system"] == s for r in rows)]
names = {"redis": "Redis AOF always", "baseline": "baseline steadfast"}
head = "| test | steadfast req/s | p50 / p99 / p99.9 / max ms |"
for o in others:
    head += f" {names[o]} req/s | p50 / p99 / p99.9 / max ms | steadfast / {names[o]} |"
print(head + " server CPU ms per 1k requests (steadfast" + "".join(f", {o}" for o in others) + ") |")
print("|---" * (3 + 3 * len(others) + 1) + "|")
for test in ("SET", "GET"):
    for pipe in ("1", "16"):
        line = f"| {test} -P {pipe} | {med('steadfast', pipe, test, 'rps'):,.0f} | {lat('steadfast', pipe, test)} |"
        for o in others:
            line += f" {med(o, pipe, test, 'rps'):,.0f} | {lat(o, pipe, test)} | {ratio('steadfast', o, pipe, test)} |"
        cpu = [f"{med(s, pipe, test, 'server_cpu_ms_per_1k'):.0f}" for s in ["steadfast"] + others]
        print(line + " " + ", ".join(cpu) + " |")
EOF
}

if [ -n "${SUMMARIZE_ONLY:-}" ]; then summarize "$SUMMARIZE_ONLY/results.tsv"; exit 0; fi
{
  echo "date: $(date -u +%FT%TZ)"
  echo "steadfast: $("$work/steadfast" --version 2>/dev/null || echo "?") ($src_bin)"
  echo "redis: $(redis-server --version)"
  echo "nproc: $(nproc)"
} >"$OUT/meta.txt"
printf 'pass\tsystem\tpipeline\ttest\trps\tp50_ms\tp99_ms\tp999_ms\tmax_ms\tserver_cpu_ms_per_1k\n' \
  >"$OUT/results.tsv"
for pass in $(seq 1 "$PASSES"); do
  # Rotate the order each pass, so no system always runs first (or last).
  order=$(echo $systems | tr ' ' '\n' | awk -v k=$(((pass - 1) % $(echo $systems | wc -w))) \
    '{a[NR-1]=$0} END {for (i = 0; i < NR; i++) print a[(i + k) % NR]}')
  for sys in $order; do run_system "$pass" "$sys"; done
done

summarize "$OUT/results.tsv"
echo "raw outputs: $OUT" >&2
