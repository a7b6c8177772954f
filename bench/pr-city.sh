#!/usr/bin/env bash
# A new team's `pr trust-ca` and `pr spiffe-id` against the fake GitHub
# (GitHub's documented limits on) holding a generated city (TEAMS teams × 3
# pods, the scaffold in every folder): requests per command (by kind) and
# wall-clock medians, next to `git clone --depth 1` of the same city from disk.
#   bench/pr-city.sh [RUNS] [TEAMS...]   (defaults 5; 1000 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000)
for teams in "${sizes[@]}"; do
  echo "== $teams teams"
  SPIREPOD_BENCH=1 BENCH_RUNS=$runs BENCH_TEAMS=$teams \
    go test ./bench -run TestBenchPRCity -count=1 -v -timeout 60m 2>&1 | grep -E 'requests|median|ratio|city:|FAIL|ok'
done
