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
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SPIREPOD_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spirepod/testbin}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=${CGO_ENABLED:-1}

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
  out="$final.tmp.$$"
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

# A failed or interrupted build leaves no half-built directory behind.
building=
trap '[ -z "$building" ] || rm -rf "$building"' EXIT

total=$SECONDS
if [ $# -gt 0 ]; then
  comps=("$@")
else
  comps=()
  for f in "$root"/hack/testbin/*/component.sh; do comps+=("$(basename "$(dirname "$f")")"); done
fi
for c in "${comps[@]}"; do
  [ -f "$root/hack/testbin/$c/component.sh" ] || { echo "testbin: unknown component $c" >&2; exit 2; }
  build_one "$c"
done
echo "testbin: ready in $((SECONDS - total))s: $cache"
