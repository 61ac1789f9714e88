#!/bin/bash
# bench/restart.sh BIN DIR: time `up` on a stopped cluster's data (DIR/data, e.g. the one bench/scale.sh leaves)
# until "cluster is up", then stop it; PROF=1 records all nodes with perf into DIR/restart.perf.
BIN=$1; D=$2
rm -f $D/up2.log
t0=$(date +%s.%N)
if [ -n "$PROF" ]; then
  perf record -F 199 -o $D/restart.perf -- $BIN up --data-dir $D/data --base-port 17301 --redis-base-port 17401 --groups 8 --no-restart > $D/up2.log 2>&1 & UP=$!
else
  $BIN up --data-dir $D/data --base-port 17301 --redis-base-port 17401 --groups 8 --no-restart > $D/up2.log 2>&1 & UP=$!
fi
for i in $(seq 900); do grep -q "cluster is up" $D/up2.log 2>/dev/null && break; sleep 0.2; done
t1=$(date +%s.%N)
echo "restart to 'cluster is up': $(echo "$t1 - $t0" | bc) s"
kill -INT $UP; wait $UP 2>/dev/null; sleep 1; pkill -f "data-dir $D/data" ; true
