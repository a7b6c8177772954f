#!/usr/bin/env bash
# spirepod apply --wait=false, diff and status against kubectl over a slow link:
# a TCP proxy on 127.0.0.1 adds 50 ms each way in front of the test bed's API
# server. Each command is also run direct; (slow - direct) / RTT is the
# number of sequential round trips it needs.
#   bench/slow-link.sh [RUNS]   (default 5; needs `make testbin`)
set -euo pipefail
cd "$(dirname "$0")/.."
hack/testbin.sh >/dev/null
SPIREPOD_BENCH=1 BENCH_RUNS=${1:-5} SPIREPOD_TESTBIN=$(hack/testbin.sh --print) \
  go test ./bench -run TestBenchSlowLink -count=1 -v -timeout 30m 2>&1 | grep -E 'RTT|median|ratio|proxy|FAIL|ok'
