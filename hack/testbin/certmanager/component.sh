# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
version=v1.21.2
bins="cert-manager-controller"
assets="crds"
build() {
  go build -ldflags "$strip" -o "$out/bin/cert-manager-controller" .
  local src
  src=$(module_dir github.com/cert-manager/cert-manager)
  mkdir -p "$out/crds"
  cp "$src"/deploy/crds/*.yaml "$out/crds/"
  chmod u+w "$out/crds"/*
}
