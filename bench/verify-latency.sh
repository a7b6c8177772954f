#!/usr/bin/env bash
# Delay from the XFCC line being written to the curl log (served through the
# real apiserver by kwok) to `spirepod verify` exiting 0, compared with a
# `kubectl logs | grep` loop polling every 2 s; alternating, one test bed.
#   bench/verify-latency.sh [RUNS]   (default 9; needs `make testbin`)
set -euo pipefail
cd "$(dirname "$0")/.."
hack/testbin.sh >/dev/null
SPIREPOD_BENCH=1 BENCH_RUNS=${1:-9} SPIREPOD_TESTBIN=$(hack/testbin.sh --print) \
  go test ./bench -run TestBenchVerifyLatency -count=1 -v 2>&1 | grep -E 'write→exit|median|FAIL|ok'
