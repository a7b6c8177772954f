#!/usr/bin/env bash
# spirepod apply --wait=false vs kubectl apply -k certs && kubectl apply -k .,
# on one real test bed, alternating runs, fresh namespace each run.
#   bench/apply.sh [RUNS]   (default 11; needs `make testbin`)
set -euo pipefail
cd "$(dirname "$0")/.."
hack/testbin.sh >/dev/null
SPIREPOD_BENCH=1 BENCH_RUNS=${1:-11} SPIREPOD_TESTBIN=$(hack/testbin.sh --print) \
  go test ./bench -run TestBenchApply -count=1 -v 2>&1 | grep -E 'median|ratio|FAIL|ok'
