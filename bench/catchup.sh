#!/usr/bin/env bash
# bench/catchup.sh BIN DATA_DIR: a new replica catching up by snapshot under write load.
# DATA_DIR is a stopped `up` cluster's data directory (e.g. the one bench/scale.sh leaves, with
# its 1,000,000 sessions). Starts that cluster, starts an empty node 4 with --join, runs 64
# updating clients for SECS (60) with a timeline and, WAIT (10) seconds in, moves every replica
# of node 3 to node 4 (`ctl replace-node 3 4`): node 4 receives each group's snapshot while the
# load goes on. Prints the bench report (its slowest second and max show any stall) and how long
# the move took.
BIN=${1:?bin}; DATA=${2:?data dir}; SECS=${SECS:-60}; WAIT=${WAIT:-10}
D=$(mktemp -d /tmp/catchup.XXXX)
PEERS=1=127.0.0.1:17301,2=127.0.0.1:17302,3=127.0.0.1:17303
EPS=127.0.0.1:17301,127.0.0.1:17302,127.0.0.1:17303
$BIN up --data-dir $DATA --base-port 17301 --redis-base-port 17401 --groups 8 --no-restart > $D/up.log 2>&1 & UP=$!
for i in $(seq 600); do grep -q "cluster is up" $D/up.log && break; sleep 0.5; done
$BIN serve --id 4 --listen 127.0.0.1:17304 --data-dir $D/node4 --groups 8 \
  --peers $PEERS,4=127.0.0.1:17304 --join > $D/node4.log 2>&1 & N4=$!
$BIN bench --endpoints $EPS --clients 64 --duration-secs $SECS --timeline > $D/bench.out 2>&1 & B=$!
sleep $WAIT
t0=$(date +%s.%N)
$BIN ctl --endpoints $EPS replace-node 3 4 --addr 127.0.0.1:17304 > $D/replace.out 2>&1
rc=$?
t1=$(date +%s.%N)
wait $B
cat $D/bench.out
echo "--- replace-node 3 4 (exit $rc) took $(echo "$t1 - $t0" | bc) s, started ${WAIT} s into the load"
tail -3 $D/replace.out
$BIN ctl --endpoints $EPS,127.0.0.1:17304 status 2>&1 | head -12
echo "node 4 RSS $(( $(awk '/VmRSS/{print $2}' /proc/$N4/status) / 1024 )) MiB"
kill $N4 $UP; wait $N4 $UP 2>/dev/null
echo "dir: $D"
