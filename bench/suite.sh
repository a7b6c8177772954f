#!/usr/bin/env bash
# How long the suite takes: wall seconds, the machine's load before and after,
# each package's seconds and the slowest tests, from `go test -json`. Test
# results are never cached (-count=1); build caches are whatever they are
# (warm on a developer's machine, empty on a fresh CI machine).
#
#   bench/suite.sh                 `make test` (test bed, vet, the whole suite)
#   bench/suite.sh --short         `make test-short`
#   bench/suite.sh --run PKG REGEX one package, the tests REGEX matches, with the bed
#   bench/suite.sh --each PKG      every top-level test of PKG alone (its bed's start
#                                  included), one after another: seconds per test
#   bench/suite.sh --summary FILE  the summary of a saved `go test -json` file
#
# Output goes to stdout; the raw JSON is kept in $SUITE_OUT (default a new
# directory under /tmp, printed at the end). Extra `go test` flags: $SUITE_FLAGS
# (e.g. SUITE_FLAGS='-p 3').
set -euo pipefail
# SUITE_ROOT: the checkout to measure (a copy of this script may run from
# elsewhere: bash reads a script as it runs, so editing it mid-run breaks it).
cd "${SUITE_ROOT:-$(dirname "$0")/..}"

summary() { # FILE: per-package and per-test seconds from go test -json
  local f=$1
  echo "packages (seconds, slowest first):"
  jq -r 'select(.Action=="pass" or .Action=="fail" or .Action=="skip") | select(.Test==null) |
    "\(.Elapsed // 0)\t\(.Action)\t\(.Package)"' "$f" | sort -rn | awk -F'\t' '{printf "  %8.1f  %-4s %s\n", $1, $2, $3}'
  echo "tests (top-level, seconds, slowest 30):"
  jq -r 'select(.Action=="pass" or .Action=="fail" or .Action=="skip") | select(.Test!=null) |
    select(.Test | contains("/") | not) | "\(.Elapsed // 0)\t\(.Action)\t\(.Package | sub(".*/spirepod/";""))\t\(.Test)"' "$f" |
    sort -rn | awk 'NR <= 30' | awk -F'\t' '{printf "  %8.1f  %-4s %s %s\n", $1, $2, $3, $4}'
  local fails skips
  fails=$(jq -r 'select(.Action=="fail" and .Test!=null) | "\(.Package) \(.Test)"' "$f" | sort -u)
  skips=$(jq -r 'select(.Action=="skip" and .Test!=null) | "\(.Package) \(.Test)"' "$f" | sort -u)
  echo "failed tests: $(printf '%s' "$fails" | grep -c . || true)"
  [ -z "$fails" ] || printf '%s\n' "$fails" | sed 's/^/  /'
  echo "skipped tests: $(printf '%s' "$skips" | grep -c . || true)"
  [ -z "$skips" ] || printf '%s\n' "$skips" | sed 's/^/  /' | awk 'NR <= 40'
}

mode=all
case "${1:-}" in
  --summary) summary "$2"; exit 0 ;;
  --short) mode=short ;;
  --run) mode=run; pkg=$2; regex=$3 ;;
  --each) mode=each; pkg=$2 ;;
  "") ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac

out=${SUITE_OUT:-$(mktemp -d /tmp/spirepod-suite.XXXXXX)}
mkdir -p "$out"
json="$out/test.json"
echo "suite: $mode on $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s.%N)
rc=0
case $mode in
  all)
    make test TESTFLAGS="-count=1 -json ${SUITE_FLAGS:-}" >"$json" 2>"$out/stderr" || rc=$? ;;
  short)
    make test-short TESTFLAGS="-count=1 -json ${SUITE_FLAGS:-}" >"$json" 2>"$out/stderr" || rc=$? ;;
  each)
    # One test binary, each test its own process: nothing is shared between
    # them but the caches (test-bin, images, the e2e CLI).
    bin="$out/pkg.test"
    go test -c -o "$bin" "$pkg"
    dir=$(go list -f '{{.Dir}}' "$pkg")
    tb=$(hack/testbin.sh --print)
    : >"$json"
    for t in $("$bin" -test.list '.*' | grep -E '^(Test|Fuzz)'); do
      t0=$(date +%s.%N)
      trc=0
      (cd "$dir" && SPIREPOD_TESTBIN=$tb SPIREPOD_REQUIRE_TESTBED=1 \
        go tool test2json -t -p "$pkg" "$bin" -test.run "^$t\$" -test.count=1 -test.v=test2json -test.timeout=20m) >>"$json" 2>>"$out/stderr" || trc=$?
      [ $trc = 0 ] || rc=$trc
      awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$t" -v rc="$trc" 'BEGIN {printf "suite: %-40s alone %6.1f s (exit %d)\n", t, b-a, rc}'
    done ;;
  run)
    SPIREPOD_TESTBIN=$(hack/testbin.sh --print) SPIREPOD_REQUIRE_TESTBED=1 \
      go test -count=1 -json -parallel 4 ${SUITE_FLAGS:-} -run "$regex" "$pkg" >"$json" 2>"$out/stderr" || rc=$? ;;
esac
end=$(date +%s.%N)
echo "suite: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# make's own lines (testbin, vet) are not JSON; keep only the JSON for the summary.
grep '^{' "$json" >"$json.only" || true
summary "$json.only"
awk -v a="$start" -v b="$end" -v rc="$rc" 'BEGIN {printf "suite: wall %.1f s, exit %d\n", b-a, rc}'
echo "suite: raw output in $out"
exit $rc
