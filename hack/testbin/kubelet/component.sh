# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
# kubelet for the real-node test bed (internal/testbed node.go): the same
# Kubernetes version as hack/testbin/kubernetes, in a module of its own because
# the kubelet's packages need go.sum entries the control plane does not.
version=v1.37.2
bins="kubelet"
assets=""
build() {
  go build -o "$out/bin/kubelet" k8s.io/kubernetes/cmd/kubelet
}
