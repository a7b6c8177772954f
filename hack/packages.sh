#!/usr/bin/env bash
# Installs the Debian packages the real-node test bed (internal/testbed,
# TestRealPod*) runs: containerd and runc (the container runtime), the CNI
# plugins (bridge, host-local, loopback), busybox-static (the shell in the
# test images), util-linux's unshare, iproute2 and iptables (the test's own
# network namespace, bridge and one DNAT rule), and curl (copied with its
# libraries into the curl test image).
#
# Idempotent: does nothing when every package is installed. Needs root; a
# non-root developer gets a message and exit 0, and the real-pod tests skip
# (or fail under SPIREPOD_REQUIRE_TESTBED=1) with the missing pieces named.
set -euo pipefail

pkgs=(containerd runc containernetworking-plugins busybox-static util-linux iproute2 iptables curl)

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "packages: all present (${pkgs[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "packages: not root, not installing: ${missing[*]}" >&2
  echo "packages: the real-pod tests (TestRealPod*) need them and root; run 'sudo hack/packages.sh'" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "packages: no apt-get: install by hand: ${missing[*]}" >&2
  exit 0
fi
echo "packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: containerd recommends nothing the test bed needs.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian package enables and may start a system containerd (on
# /run/containerd). The test bed runs its own with its own socket and never
# uses the system one; it is left as the package set it up.
echo "packages: installed ${missing[*]}"
