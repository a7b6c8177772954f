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
  # The version a released binary carries (Kubernetes' hack/lib/version.sh
  # stamps these): without it the API server reports v0.0.0-master, and
  # apply's preflight, which refuses servers older than v1.29 (native
  # sidecars), would see what no real cluster reports. Only the link
  # step depends on -X, so the compiled packages stay cached.
  local minor=${version#v1.}; minor=${minor%%.*}
  local v
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    v+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go build -ldflags "$strip$v" -o "$out/bin/" "${pkgs[@]}"
}
