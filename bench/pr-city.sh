#!/usr/bin/env bash
# A new team's `pr trust-ca` and `pr spiffe-id` against the fake GitHub
# holding a generated city (1,000 teams × 3 pods, the scaffold in every
# folder): requests per command and wall-clock medians, next to
# `git clone --depth 1` of the same city from disk.
#   bench/pr-city.sh [RUNS] [TEAMS]   (defaults 5, 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
SPIREPOD_BENCH=1 BENCH_RUNS=${1:-5} BENCH_TEAMS=${2:-1000} \
  go test ./bench -run TestBenchPRCity -count=1 -v -timeout 30m 2>&1 | grep -E 'requests|median|ratio|city:|FAIL|ok'
