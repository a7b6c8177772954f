#!/usr/bin/env bash
# Builds the real components the test bed runs (etcd, Kubernetes, kwok,
# cert-manager, SPIRE) from the pinned wrapper modules in hack/testbin/<component>,
# into a cache keyed by component and version. Only what is missing is built.
# Sources come from the Go module proxy only.
#
#   hack/testbin.sh            build what is missing, print the cache directory
#   hack/testbin.sh --print    print the cache directory only
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SPIREPOD_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spirepod/testbin}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=${CGO_ENABLED:-1}

# component version binaries...
components=(
  "etcd v3.6.16 etcd"
  "kubernetes v1.37.2 kube-apiserver kube-controller-manager kube-scheduler kubectl"
  "kwok v0.8.0 kwok"
  "certmanager v1.21.2 cert-manager-controller"
  "spire v1.13.3 spire-server spire-agent"
)

if [ "${1:-}" = "--print" ]; then
  echo "$cache"
  exit 0
fi

stamp_of() { # the wrapper module's pinned content decides whether a cached build is current
  cat "$root/hack/testbin/$1/go.mod" "$root/hack/testbin/$1/go.sum" $(ls "$root/hack/testbin/$1"/*.go 2>/dev/null) | sha256sum | cut -c1-16
}

# Files besides the binaries that a cached build must hold.
assets_of() {
  case $1 in
    kwok) echo "stages/node-heartbeat-with-lease.yaml crds/kwok.x-k8s.io_logs.yaml" ;;
    certmanager) echo "crds" ;;
  esac
}

build_one() {
  local comp=$1 ver=$2; shift 2
  local dir="$root/hack/testbin/$comp" out="$cache/$comp-$ver" stamp
  stamp=$(stamp_of "$comp")
  if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
    local ok=1
    for b in "$@"; do [ -x "$out/bin/$b" ] || ok=0; done
    for a in $(assets_of "$comp"); do [ -e "$out/$a" ] || ok=0; done
    if [ $ok = 1 ]; then echo "testbin: $comp $ver cached"; return; fi
  fi
  local tmp="$out.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp/bin"
  local start=$SECONDS
  echo "testbin: building $comp $ver ..."
  (
    cd "$dir"
    case $comp in
      etcd) go build -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3 ;;
      kubernetes)
        for b in "$@"; do go build -o "$tmp/bin/$b" "k8s.io/kubernetes/cmd/$b"; done ;;
      kwok)
        go build -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
        src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
        mkdir -p "$tmp/stages" "$tmp/crds"
        cp "$src"/kustomize/stage/node/fast/node-initialize.yaml \
           "$src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           "$src"/kustomize/stage/pod/fast/pod-*.yaml "$tmp/stages/"
        cp "$src"/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml "$src"/kustomize/crd/bases/kwok.x-k8s.io_clusterlogs.yaml "$tmp/crds/"
        chmod u+w "$tmp/stages"/* "$tmp/crds"/* ;;
      certmanager)
        go build -o "$tmp/bin/cert-manager-controller" .
        src=$(go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
        mkdir -p "$tmp/crds"
        cp "$src"/deploy/crds/*.yaml "$tmp/crds/"
        chmod u+w "$tmp/crds"/* ;;
      spire)
        for b in "$@"; do
          go build -ldflags "-X github.com/spiffe/spire/pkg/common/version.gittag=${ver#v}" -o "$tmp/bin/$b" "github.com/spiffe/spire/cmd/$b"
        done ;;
    esac
  )
  echo "$stamp" > "$tmp/.stamp"
  rm -rf "$out"; mv "$tmp" "$out"
  echo "testbin: built $comp $ver in $((SECONDS - start))s -> $out"
}

total=$SECONDS
only=${1:-}
for c in "${components[@]}"; do
  # shellcheck disable=SC2086
  set -- $c
  if [ -n "$only" ] && [ "$only" != "$1" ]; then continue; fi
  build_one "$@"
done
echo "testbin: ready in $((SECONDS - total))s: $cache"
