#!/usr/bin/env bash
# Builds every libFuzzer target in fuzz/ on stable Rust, then runs each for N seconds (first
# argument, default 60) starting from the in-repo seed corpus fuzz/corpus/<target>/. The corpus is
# copied to a scratch directory first, so a run never grows the repo. Prints the executions per
# target and exits non-zero on any crash, timeout (>10 s per input) or OOM (>2 GiB), printing the
# offending input's path and hex. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
triple=x86_64-unknown-linux-gnu
work="${FUZZ_WORK:-$PWD/fuzz/corpus-work}"

# Coverage-guided libFuzzer on stable: sancov passes instead of `-Zsanitizer` (reliability-goals
# §4.4). The explicit --target keeps build scripts uninstrumented. This replaces
# .cargo/config.toml's rustflags, so `--cfg tokio_unstable` is repeated here.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
--cfg tokio_unstable"
unset CARGO_BUILD_RUSTFLAGS

targets=()
for f in fuzz/fuzz_targets/*.rs; do
  targets+=("$(basename "$f" .rs)")
done

echo "=== building ${#targets[@]} fuzz targets"
(cd fuzz && cargo build --release --target "$triple" --bins)

rm -rf "$work"
mkdir -p "$work"
failed=0
summary=()
for t in "${targets[@]}"; do
  dir="$work/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [ -d "fuzz/corpus/$t" ]; then
    cp -r "fuzz/corpus/$t/." "$dir/corpus/"
  fi
  echo "=== fuzzing $t for ${secs}s"
  set +e
  "fuzz/target/$triple/release/$t" "$dir/corpus" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$dir/log" | awk '{print $2}' | tail -1)
  files=$(find "$dir/corpus" -type f | wc -l)
  line=$(printf '%-18s %12s execs in %ss, corpus %s files, exit %s' \
    "$t" "${execs:-?}" "$secs" "$files" "$rc")
  summary+=("$line")
  echo "$line"
  artifacts=$(find "$dir/artifacts" -type f | sort)
  if [ "$rc" -ne 0 ] || [ -n "$artifacts" ]; then
    failed=1
    echo "!!! $t failed (exit $rc); last lines of $dir/log:"
    tail -n 40 "$dir/log"
    for a in $artifacts; do
      echo "!!! input: $a"
      echo "!!! hex:   $(od -An -v -tx1 "$a" | tr -d ' \n')"
    done
  fi
done

echo "=== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found a problem: minimize it (-minimize_crash=1), add it to fuzz/corpus/<target>/" >&2
  exit 1
fi
