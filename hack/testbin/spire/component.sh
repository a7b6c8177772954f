# Sourced by hack/testbin.sh: what this component builds and how.
# Runs in this directory (the pinned wrapper module); $out is the temp output dir.
version=v1.13.3
bins="spire-server spire-agent"
assets=""
build() {
  local b pkgs=()
  for b in $bins; do pkgs+=("github.com/spiffe/spire/cmd/$b"); done
  # a leading v in gittag makes the binaries panic at start
  go build -ldflags "$strip -X github.com/spiffe/spire/pkg/common/version.gittag=${version#v}" -o "$out/bin/" "${pkgs[@]}"
}
