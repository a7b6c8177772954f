#!/usr/bin/env bash
# Times `spirepod pr spiffe-id --dry-run` for 500 replicas (1000 entries),
# as a whole process, for each registration format. No GitHub token is set,
# so nothing is read or sent: the time is rendering, validation and the diff.
#   bench/pr-spiffe-id.sh [RUNS] [REPLICAS]   (defaults 11, 500)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
runs=${1:-11}
replicas=${2:-500}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build_spirepod "$work/spirepod"
"$work/spirepod" init --team bench --namespace team-bench --replicas "$replicas" "$work/sc" >/dev/null 2>&1
cd "$work/sc"
env -u GH_TOKEN -u GITHUB_TOKEN "$work/spirepod" pki gen >/dev/null 2>&1
for format in spiffeid cluster-static-entry entry-json; do
  times=()
  for _ in $(seq "$runs"); do
    t0=$(now_ns)
    env -u GH_TOKEN -u GITHUB_TOKEN PATH=/nonexistent "$work/spirepod" pr spiffe-id --dry-run --format "$format" >"$work/out" 2>/dev/null
    t1=$(now_ns)
    times+=($((t1 - t0)))
  done
  med=$(printf '%s\n' "${times[@]}" | median)
  lines=$(wc -l <"$work/out")
  echo "pr spiffe-id --dry-run --format $format, $replicas replicas: median $(ms "$med") ms over $runs runs ($lines lines of output)"
done
