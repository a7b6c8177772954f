#!/usr/bin/env bash
# Builds the real components the test bed runs from the pinned wrapper modules
# in hack/testbin/<component>, into a cache keyed by component and version.
# Only what is missing is built. Sources come from the Go module proxy only.
#
# Each hack/testbin/<component>/component.sh sets version, bins and assets and
# defines build(), which runs in that directory and writes into $out.
#
#   hack/testbin.sh              build what is missing, print the cache directory
#   hack/testbin.sh COMPONENT..  only these components
#   hack/testbin.sh --print      print the cache directory only
#
# SPIREPOD_TESTBIN_JOBS (default 2) components build at once, longest first:
# on 2 cores one build's single-threaded link and module downloads leave a
# core idle that the next build's compile fills. Each build's output goes to
# a log printed when it ends; the summary gives each component's seconds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SPIREPOD_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spirepod/testbin}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=${CGO_ENABLED:-1}
# Test-bed binaries carry no symbol table or DWARF: links are faster and the
# cache smaller; stack traces still have file:line (pclntab is kept).
export strip="-s -w"
jobs=${SPIREPOD_TESTBIN_JOBS:-2}

if [ "${1:-}" = "--print" ]; then
  echo "$cache"
  exit 0
fi

# module_dir MODULE: the directory of MODULE (as pinned by the wrapper module
# in the working directory) in the module cache, downloaded first: on a fresh
# machine `go list -m -f {{.Dir}}` is empty until the module is downloaded.
module_dir() {
  go mod download "$1"
  local d
  d=$(go list -m -f "{{.Dir}}" "$1")
  if [ -z "$d" ] || [ ! -d "$d" ]; then
    echo "testbin: module $1 has no directory in the module cache" >&2
    return 1
  fi
  echo "$d"
}

# The wrapper module's pinned content and the recipe decide whether a cached build is current.
stamp_of() {
  local d="$root/hack/testbin/$1"
  cat "$d/component.sh" $(ls "$d"/go.mod "$d"/go.sum "$d"/*.go 2>/dev/null) | sha256sum | cut -c1-16
}

build_one() {
  local comp=$1 dir="$root/hack/testbin/$1"
  local version bins assets
  # shellcheck disable=SC1091
  source "$dir/component.sh"
  local final="$cache/$comp-$version" stamp
  stamp=$(stamp_of "$comp")
  # A temp dir of a build that did not finish (its process is gone) is removed.
  local stale pid
  for stale in "$final".tmp.*; do
    [ -d "$stale" ] || continue
    pid=${stale##*.tmp.}
    kill -0 "$pid" 2>/dev/null || rm -rf "$stale"
  done
  if [ -f "$final/.stamp" ] && [ "$(cat "$final/.stamp")" = "$stamp" ]; then
    local ok=1 b a
    for b in $bins; do [ -x "$final/bin/$b" ] || ok=0; done
    for a in $assets; do [ -e "$final/$a" ] || ok=0; done
    if [ $ok = 1 ]; then echo "testbin: $comp $version cached"; return; fi
  fi
  out="$final.tmp.$BASHPID"
  rm -rf "$out"; mkdir -p "$out/bin"
  building=$out
  local start=$SECONDS
  echo "testbin: building $comp $version ..."
  (cd "$dir" && build)
  echo "$stamp" > "$out/.stamp"
  rm -rf "$final"; mv "$out" "$final"
  building=
  echo "testbin: built $comp $version in $((SECONDS - start))s -> $final"
  unset -f build
}

# A failed or interrupted build leaves no half-built directory behind (the
# trap is set in each build's subshell).
building=

total=$SECONDS
# Longest first (cold seconds measured on 2 cores), so the pool ends together.
order="spire kubernetes certmanager spire-controller-manager kwok k8s-workload-registrar etcd"
if [ $# -gt 0 ]; then
  comps=("$@")
else
  comps=()
  for c in $order; do [ -f "$root/hack/testbin/$c/component.sh" ] && comps+=("$c"); done
  for f in "$root"/hack/testbin/*/component.sh; do
    c=$(basename "$(dirname "$f")")
    case " $order " in *" $c "*) ;; *) comps+=("$c") ;; esac
  done
fi
for c in "${comps[@]}"; do
  [ -f "$root/hack/testbin/$c/component.sh" ] || { echo "testbin: unknown component $c" >&2; exit 2; }
done

logs=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -- "$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
# Each build runs in a subshell of its own (its own EXIT trap removes its temp
# dir); its log is printed when it ends.
running=()
failed=0
reap() { # wait for the first of the running builds to end
  local p c i
  wait -n "${running[@]}" 2>/dev/null || true
  for i in "${!running[@]}"; do
    p=${running[$i]}
    kill -0 "$p" 2>/dev/null && continue
    c=${names[$p]}
    if wait "$p"; then :; else failed=1; echo "testbin: $c FAILED:" >&2; fi
    cat "$logs/$c.log"
    unset 'running[i]'
  done
  running=("${running[@]}")
}
declare -A names
for c in "${comps[@]}"; do
  while [ ${#running[@]} -ge "$jobs" ]; do reap; done
  ( trap '[ -z "$building" ] || rm -rf "$building"' EXIT; build_one "$c" ) >"$logs/$c.log" 2>&1 &
  names[$!]=$c; running+=($!); pids+=($!)
done
while [ ${#running[@]} -gt 0 ]; do reap; done
[ $failed = 0 ] || { echo "testbin: some components failed to build (logs above)" >&2; exit 1; }
echo "testbin: ready in $((SECONDS - total))s: $cache"
