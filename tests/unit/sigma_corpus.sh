#!/bin/sh
# Loads every rule of the SigmaHQ corpus (github.com/SigmaHQ/sigma), each file on its own,
# with test_rules_load's corpus mode. The corpus is not in this repository and CI has no
# network, so the test is skipped (exit 77) unless a copy is extracted at $KX_SIGMA_DIR
# (default /tmp/sigma), for example:
#     git clone --depth 1 https://github.com/SigmaHQ/sigma /tmp/sigma-git
#     mkdir -p /tmp/sigma && git -C /tmp/sigma-git archive HEAD rules rules-threat-hunting \
#         rules-emerging-threats rules-compliance | tar -x -C /tmp/sigma
# Failures are allowed only for refusals docs/rules.md documents (an expand placeholder
# naming a list the corpus does not ship).
set -u
bin=$1
dir=${KX_SIGMA_DIR:-/tmp/sigma}
if [ ! -d "$dir/rules" ]; then
    echo "SKIP: no Sigma corpus at $dir (set KX_SIGMA_DIR)"
    exit 77
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cd "$dir" || exit 1
for d in rules rules-threat-hunting rules-emerging-threats rules-compliance; do
    [ -d "$d" ] && find "$d" -type f \( -name '*.yml' -o -name '*.yaml' \)
done | LC_ALL=C sort | xargs "$bin" >"$out"
awk '/^loaded / { ok += $2; all += $4; sub(/\(/, "", $6); rules += $6 }
     END { printf "SigmaHQ corpus: %d of %d files loaded, %d rules\n", ok, all, rules }' "$out"
grep '^FAIL' "$out"
unexpected=$(grep '^FAIL' "$out" | grep -cv 'placeholder %[^%]*% names no list')
# Each directory must also load as one ruleset (ids unique across files).
for d in rules rules-threat-hunting rules-compliance; do
    [ -d "$d" ] || continue
    res=$("$bin" "$d") || unexpected=$((unexpected + 1))
    echo "$res" | sed "s|^|$d as one ruleset: |"
done
if [ "$unexpected" -ne 0 ]; then
    echo "$unexpected unexpected failure(s)"
    exit 1
fi
exit 0
