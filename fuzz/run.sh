#!/usr/bin/env bash
# Runs one fuzz target for SECONDS: first every seed (made by seeds.sh from the repo's
# content) and every saved crash in fuzz/regressions/TARGET/, then new inputs until the time
# is up. Exits 0 when nothing broke, 1 on a crash, leak, UB or hang (the input is saved
# under BUILD_DIR/crashes/TARGET/), 77 when the target is not built (ctest counts a skip).
#
# The corpus libFuzzer grows goes to a temp dir removed at the end, so each `make test` run
# starts from the same seeds; --keep keeps it in BUILD_DIR/corpus/TARGET/ instead, so long
# runs build on each other.
#
# usage: fuzz/run.sh [--keep] BUILD_DIR TARGET SECONDS [libFuzzer flags...]
set -euo pipefail

keep=0
if [ "${1:-}" = --keep ]; then
    keep=1
    shift
fi
if [ $# -lt 3 ]; then
    echo "usage: fuzz/run.sh [--keep] BUILD_DIR TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
build=$1
target=$2
secs=$3
shift 3
src=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$build/$target" ]; then
    echo "run.sh: $build/$target is not built (make fuzz); skipped" >&2
    exit 77
fi
build=$(cd "$build" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/kx-$target.XXXXXX")
trap 'rm -rf "$work"' EXIT
bash "$src/fuzz/seeds.sh" "$target" "$work/seeds"

corpus=$work/corpus
if [ $keep = 1 ]; then
    corpus=$build/corpus/$target
fi
crashes=$build/crashes/$target
mkdir -p "$corpus" "$crashes"

# libFuzzer writes new inputs to the first directory only: the seeds and the regressions
# (read-only, in the source tree) come after it.
dirs=("$corpus" "$work/seeds")
if [ -d "$src/fuzz/regressions/$target" ]; then
    dirs+=("$src/fuzz/regressions/$target")
fi
flags=()
dict=$src/fuzz/dicts/${target#fuzz_}.dict
if [ -f "$dict" ]; then
    flags+=("-dict=$dict")
fi

# libFuzzer's own exit code for a finding is 77, which ctest would read as a skip.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
rc=0
"$build/$target" -max_total_time="$secs" -timeout=10 -error_exitcode=1 -timeout_exitcode=1 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "${flags[@]}" "$@" "${dirs[@]}" || rc=$?
if [ $rc -ne 0 ]; then
    echo "run.sh: $target failed (exit $rc); the input is in $crashes/" >&2
    echo "run.sh: reproduce with: $build/$target $crashes/<file>" >&2
    exit 1
fi
