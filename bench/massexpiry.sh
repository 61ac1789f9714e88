#!/usr/bin/env bash
# bench/massexpiry.sh BIN N: preload N sessions (60 s idle timeout), stop the cluster for 70 s, restart,
# 64 clients update their own 1000 sessions for 20 s while the N sessions expire at once.
BIN=${1:?bin}; N=${2:?sessions}; D=$(mktemp -d /tmp/massexp.XXXX); export STEADFAST_IDLE_TIMEOUT_MS=60000
EPS=127.0.0.1:17301,127.0.0.1:17302,127.0.0.1:17303
up() { $BIN up --data-dir $D/data --base-port 17301 --redis-base-port 17401 --groups 8 --no-restart > $D/up.log 2>&1 & UP=$!; for i in $(seq 300); do grep -q "cluster is up" $D/up.log && break; sleep 0.5; done; }
up
$BIN bench --endpoints $EPS --preload $N --value-bytes 256 --clients 64 --duration-secs 1 --keep > $D/pre.out 2>&1
grep preload $D/pre.out
kill $UP; wait $UP 2>/dev/null; sleep 70
up
$BIN bench --endpoints $EPS --clients 64 --duration-secs 20 --timeline > $D/bench.out 2>&1
grep -E 'throughput|slowest' $D/bench.out; grep 'second ' $D/bench.out | awk '{print $3}' | tr '\n' ' '; echo
$BIN ctl --endpoints $EPS status 2>&1 | awk 'NR>2{print $5, $8}' | sort | uniq -c | head -4
kill $UP; wait $UP 2>/dev/null; rm -rf $D
