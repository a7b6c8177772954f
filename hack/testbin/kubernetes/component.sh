# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
version=v1.37.2
bins="kube-apiserver kube-controller-manager kube-scheduler kubectl"
assets=""
build() {
  local b
  for b in $bins; do go build -o "$out/bin/$b" "k8s.io/kubernetes/cmd/$b"; done
}
