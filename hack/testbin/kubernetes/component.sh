# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
# One wrapper module and one `go build` for the control plane, the kubelet of
# the real-node test bed (internal/testbed node.go) and kubectl (the gen-cert
# image's client): one module graph, so each package compiles once.
version=v1.37.2
bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
assets=""
build() {
  local b pkgs=()
  for b in $bins; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go build -ldflags "$strip" -o "$out/bin/" "${pkgs[@]}"
}
