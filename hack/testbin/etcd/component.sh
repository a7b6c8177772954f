# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
version=v3.6.16
bins="etcd"
assets=""
build() {
  go build -ldflags "$strip" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
}
