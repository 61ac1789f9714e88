#!/usr/bin/env bash
# bench/scale.sh BIN PRELOAD [bench args]: fresh `up --groups 8` on 17301.., preload PRELOAD sessions of 1 KiB,
# 64-client updates with a timeline; RSS per node after; then restart-to-ready time of the whole cluster.
BIN=${1:?bin}; N=${2:?preload}; shift 2
D=$(mktemp -d /tmp/scale.XXXX)
start_up() { $BIN up --data-dir $D/data --base-port 17301 --redis-base-port 17401 --groups 8 --no-restart > $D/up.log 2>&1 & UP=$!; }
start_up
for i in $(seq 120); do grep -q "cluster is up" $D/up.log && break; sleep 1; done
EPS=127.0.0.1:17301,127.0.0.1:17302,127.0.0.1:17303
$BIN bench --endpoints $EPS --preload $N --value-bytes 1024 --clients 64 --duration-secs ${SECS:-30} --timeline --keep "$@" 2>&1 | tee $D/bench.out
echo "--- RSS per node (MiB), data dir sizes"
for p in $(pgrep -P $UP); do echo "pid $p rss $(( $(awk '/VmRSS/{print $2}' /proc/$p/status) / 1024 )) MiB"; done
du -sh $D/data/* 2>/dev/null
kill $UP; wait $UP 2>/dev/null; sleep 1
t0=$(date +%s.%N); start_up
for i in $(seq 600); do grep -q "cluster is up" $D/up.log 2>/dev/null && break; sleep 0.2; done
t1=$(date +%s.%N)
echo "restart to 'cluster is up': $(echo "$t1 - $t0" | bc) s"
$BIN ctl --endpoints $EPS status 2>&1 | head -20
kill $UP; wait $UP 2>/dev/null
echo "dir: $D"
