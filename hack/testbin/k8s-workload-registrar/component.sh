# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
#
# The k8s-workload-registrar of SPIRE v1.5.6 (support/k8s/k8s-workload-registrar;
# deprecated in 1.5, removed in 1.6), with the module's own dependency versions.
# Its package main is copied from the module at build time with one change,
# checked: in CRD mode the controller-runtime webhook server listens on
# 127.0.0.1 instead of every interface (upstream has no setting for the host).
# Every other line, and every package it imports, is upstream. (A go build
# -overlay cannot patch a file under GOMODCACHE, hence the copy.)
# The SpiffeID CRD (mode-crd/config) is an asset.
version=v1.5.6
bins="k8s-workload-registrar"
assets="crds/spiffeid.spiffe.io_spiffeids.yaml"
build() {
  local src pkg tmp f
  src=$(module_dir github.com/spiffe/spire)
  pkg="$src/support/k8s/k8s-workload-registrar"
  tmp="$PWD/_main.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  for f in "$pkg"/*.go; do
    case "$f" in *_test.go) continue ;; esac
    cp "$f" "$tmp/"
  done
  chmod u+w "$tmp"/*.go
  local anchor='	mgr, err := controllers.NewManager(c.LeaderElection, c.LeaderElectionResourceLock, c.MetricsBindAddr, c.WebhookCertDir, c.WebhookPort)'
  if [ "$(grep -cxF "$anchor" "$tmp/config_crd.go")" != 1 ]; then
    echo "k8s-workload-registrar: the webhook host patch no longer applies to $pkg/config_crd.go" >&2
    rm -rf "$tmp"; return 1
  fi
  awk -v anchor="$anchor" '{ print } $0 == anchor {
    print "\tif err == nil && c.WebhookEnabled {"
    print "\t\tmgr.GetWebhookServer().Host = \"127.0.0.1\" // spirepod test bed: the webhook on loopback only"
    print "\t}"
  }' "$tmp/config_crd.go" > "$tmp/config_crd.go.new"
  mv "$tmp/config_crd.go.new" "$tmp/config_crd.go"
  local rc=0
  go build -ldflags "$strip -X github.com/spiffe/spire/pkg/common/version.gittag=${version#v}" \
    -o "$out/bin/k8s-workload-registrar" "./$(basename "$tmp")" || rc=$?
  rm -rf "$tmp"
  [ $rc = 0 ] || return $rc
  mkdir -p "$out/crds"
  cp "$pkg/mode-crd/config/spiffeid.spiffe.io_spiffeids.yaml" "$out/crds/"
  chmod u+w "$out/crds"/*
}
