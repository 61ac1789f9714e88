#!/usr/bin/env bash
# Proves the simulation has teeth: each build plants one bug, and a bounded sweep must find it.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${TEETH_SEEDS:-0..400}
for feature in broken-stale-reads broken-early-ack broken-volatile-vote broken-local-clock; do
  echo "=== teeth: $feature"
  cargo run -q -p steadfast-sim --release --features "$feature" -- \
    --seeds "$seeds" --fault-secs 30 --allow-missing-faults --expect-violation | tail -n 2
done
