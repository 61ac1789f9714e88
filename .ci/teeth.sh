#!/usr/bin/env bash
# Proves the simulation has teeth: each broken-* feature of sim/Cargo.toml plants one bug, and a
# bounded sweep must find it. Prints, per feature, the seed that caught it and how many seeds it
# took. Builds run one after another (cargo locks the target dir); each feature's sweep runs in
# the background while the next feature builds, so the stage costs about one build per feature.
#
#   TEETH_SEEDS=0..250 .ci/teeth.sh                 # every feature
#   TEETH_SEEDS=0..50 .ci/teeth.sh broken-touch-revives broken-expired-get
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${TEETH_SEEDS:-0..250}
target=${CARGO_TARGET_DIR:-target}
out="$target/teeth"
mkdir -p "$out"

# Not observable on its own with openraft 0.9.25: its RaftCore waits for the leader's own log
# flush before it replicates, so a power loss never leaves a follower ahead of the leader in the
# leader's term (the LeaderTailLoss fault constructs exactly that case and finds nothing). The
# fix is defence in depth for a storage or openraft change; broken-read-barrier enables it too,
# and is caught through it (stale reads right after the old leader resumes its term).
not_alone="broken-resume-leadership"

if [ "$#" -gt 0 ]; then
  features="$*"
else
  features=$(grep -oE '^broken-[a-z-]+' sim/Cargo.toml)
fi

started=$(date +%s)
pids=()
for feature in $features; do
  if [ "$feature" = "$not_alone" ] && [ "$#" -eq 0 ]; then
    echo "=== teeth: $feature: covered by broken-read-barrier (not observable alone, see .ci/teeth.sh)"
    continue
  fi
  echo "=== teeth: building $feature"
  cargo build -q -p steadfast-sim --release --features "$feature"
  cp "$target/release/steadfast-sim" "$out/sim-$feature"
  "$out/sim-$feature" --seeds "$seeds" --fault-secs 30 --allow-missing-faults --expect-violation \
    > "$out/$feature.log" 2>&1 &
  pids+=("$!:$feature")
done

failed=0
echo "=== teeth: results (seeds $seeds, 30 simulated s each)"
for entry in "${pids[@]}"; do
  pid=${entry%%:*}
  feature=${entry#*:}
  if wait "$pid"; then
    caught=$(grep -E '^teeth: caught' "$out/$feature.log")
    why=$(grep -E 'found the planted bug' "$out/$feature.log" | sed 's/.*as expected: //' | cut -c1-150)
    printf '  %-30s %s\n  %-30s   (%s)\n' "$feature" "$caught" "" "$why"
  else
    failed=1
    printf '  %-30s NOT CAUGHT in %s\n' "$feature" "$seeds"
    tail -n 3 "$out/$feature.log" | sed 's/^/    /'
  fi
done
echo "=== teeth: done in $(( $(date +%s) - started )) s"
exit "$failed"
