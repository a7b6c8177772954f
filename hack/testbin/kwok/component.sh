# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
version=v0.8.0
bins="kwok"
assets="stages/node-heartbeat-with-lease.yaml crds/kwok.x-k8s.io_logs.yaml"
build() {
  go build -ldflags "$strip" -o "$out/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
  local src
  src=$(module_dir sigs.k8s.io/kwok)
  mkdir -p "$out/stages" "$out/crds"
  cp "$src"/kustomize/stage/node/fast/node-initialize.yaml \
     "$src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$src"/kustomize/stage/pod/fast/pod-*.yaml "$out/stages/"
  cp "$src"/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml "$src"/kustomize/crd/bases/kwok.x-k8s.io_clusterlogs.yaml "$out/crds/"
  chmod u+w "$out/stages"/* "$out/crds"/*
}
