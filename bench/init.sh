#!/usr/bin/env bash
# Times `spirepod init` as a whole process (fresh directory each run) against
# what a user does by hand: `cp -r` of the template folder plus `sed -i` of the
# namespace in every file. Alternating runs, medians, ratio.
#   bench/init.sh [RUNS]   (default 31)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
runs=${1:-31}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build_spirepod "$work/spirepod"
tmpl="$here/../scaffoldfs/templates/spire-envoy-integration"
: > "$work/a"; : > "$work/b"
for i in $(seq "$runs"); do
  t0=$(now_ns)
  "$work/spirepod" init --team bench --namespace team-bench "$work/sp$i" >/dev/null 2>&1
  t1=$(now_ns); echo $((t1 - t0)) >> "$work/a"
  t0=$(now_ns)
  cp -r "$tmpl" "$work/cp$i" && find "$work/cp$i" -type f -name '*.yaml' -exec sed -i 's/spire-envoy-integration-ns/team-bench/g' {} +
  t1=$(now_ns); echo $((t1 - t0)) >> "$work/b"
done
a=$(median < "$work/a"); b=$(median < "$work/b")
echo "spirepod init: median $(ms "$a") ms over $runs runs"
echo "cp -r + sed:   median $(ms "$b") ms over $runs runs"
echo "ratio spirepod/cp+sed: $(ratio "$a" "$b")"
