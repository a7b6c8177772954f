# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
# The upstream main, unchanged (github.com/spiffe/spire-controller-manager/cmd),
# with the module's own dependency versions; its CRDs (config/crd/bases) as assets.
version=v0.6.2
bins="spire-controller-manager"
assets="crds/spire.spiffe.io_clusterstaticentries.yaml crds/spire.spiffe.io_clusterspiffeids.yaml crds/spire.spiffe.io_clusterfederatedtrustdomains.yaml"
build() {
  go build -ldflags "$strip" -o "$out/bin/spire-controller-manager" github.com/spiffe/spire-controller-manager/cmd
  local src
  src=$(module_dir github.com/spiffe/spire-controller-manager)
  mkdir -p "$out/crds"
  cp "$src"/config/crd/bases/*.yaml "$out/crds/"
  chmod u+w "$out/crds"/*
}
