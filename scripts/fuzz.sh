#!/bin/sh
# Long fuzzing runs (npm run fuzz): builds the libFuzzer targets (native/fuzz/build.sh) and runs each
# in turn, growing a corpus in native/fuzz/corpus/<target> (not committed) from the seeds in
# fixtures/fuzz/<target>. Findings land in native/fuzz/build/crash-*; add a minimised one to
# fixtures/fuzz/<target>/ as a regression input once it is fixed.
#   FUZZ_SECONDS=N   time per target (default 600)      FUZZ_RUNS=N   executions per target instead
#   FUZZ_TARGETS="virtio_blk vhost_user"                 which targets (default: all)
#   extra arguments are passed to libFuzzer (e.g. -jobs=2 -workers=2)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/native/fuzz/build.sh" >/dev/null
targets=${FUZZ_TARGETS:-$(cd "$root/native/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')}
for t in $targets; do
  corpus="$root/native/fuzz/corpus/$t"
  mkdir -p "$corpus"
  if [ -n "${FUZZ_RUNS:-}" ]; then limit="-runs=$FUZZ_RUNS"; else limit="-max_total_time=${FUZZ_SECONDS:-600}"; fi
  echo "== fuzz_$t ($limit)"
  "$root/native/fuzz/build/fuzz_$t" "$limit" -print_final_stats=1 -rss_limit_mb=2048 \
    -artifact_prefix="$root/native/fuzz/build/" "$@" "$corpus" "$root/fixtures/fuzz/$t"
done
