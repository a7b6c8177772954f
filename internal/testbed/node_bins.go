package testbed

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Kubelet is the real kubelet `make testbin` built with the control plane
// (hack/testbin/kubernetes: one module graph, one build).
func (b Bins) Kubelet() string { return b.Kube("kubelet") }

// RealNodeSet is every test-bin binary a cluster with a real node needs:
// the control plane (kwok is not started on a real node but stays in the
// set so one `make testbin` serves both), cert-manager, SPIRE and the kubelet.
func (b Bins) RealNodeSet() []string {
	return append(append(b.KubeSet(), b.SpireSet()...), b.Kubelet())
}

// HostTools are the programs from Debian packages (hack/packages.sh) the real
// node runs: the container runtime, the CNI plugins, the network tools for
// the test's own network namespace, and what the test images copy in.
type HostTools struct {
	Containerd string // containerd (package containerd)
	Ctr        string // ctr, to import images (package containerd)
	Shim       string // containerd-shim-runc-v2 (package containerd)
	Runc       string // runc (package runc)
	CNIBinDir  string // bridge, host-local, loopback (package containernetworking-plugins)
	Busybox    string // a static busybox: the shell in the test images (package busybox-static)
	Curl       string // the real curl, copied with its libraries into the curl image (package curl)
	// Bash is copied with its libraries into the Envoy stand-in's image: the
	// real Envoy images (Ubuntu based) have it, and the scaffold's Envoy
	// probes use bash's /dev/tcp (package bash, always installed on Debian).
	Bash     string
	Unshare  string // unshare --net --mount (package util-linux)
	IP       string // ip (package iproute2)
	Iptables string // iptables (package iptables)
	Ldd      string // ldd (package libc-bin): which libraries a dynamic binary needs
}

// hostToolPaths are where Debian puts them; PATH is searched first.
var hostToolPaths = map[string][]string{
	"containerd":              {"/usr/bin/containerd"},
	"ctr":                     {"/usr/bin/ctr"},
	"containerd-shim-runc-v2": {"/usr/bin/containerd-shim-runc-v2"},
	"runc":                    {"/usr/sbin/runc", "/usr/bin/runc"},
	"busybox":                 {"/bin/busybox", "/usr/bin/busybox"},
	"curl":                    {"/usr/bin/curl"},
	"bash":                    {"/bin/bash", "/usr/bin/bash"},
	"unshare":                 {"/usr/bin/unshare"},
	"ip":                      {"/usr/sbin/ip", "/sbin/ip", "/bin/ip"},
	"iptables":                {"/usr/sbin/iptables", "/sbin/iptables"},
	"ldd":                     {"/usr/bin/ldd"},
}

// FindHostTools locates the host programs and lists what is missing, each
// with the Debian package that provides it.
func FindHostTools() (HostTools, []string) {
	var missing []string
	find := func(name, pkg string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, p := range hostToolPaths[name] {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
		missing = append(missing, fmt.Sprintf("%s (package %s)", name, pkg))
		return ""
	}
	h := HostTools{
		Containerd: find("containerd", "containerd"),
		Ctr:        find("ctr", "containerd"),
		Shim:       find("containerd-shim-runc-v2", "containerd"),
		Runc:       find("runc", "runc"),
		Busybox:    find("busybox", "busybox-static"),
		Curl:       find("curl", "curl"),
		Bash:       find("bash", "bash"),
		Unshare:    find("unshare", "util-linux"),
		IP:         find("ip", "iproute2"),
		Iptables:   find("iptables", "iptables"),
		Ldd:        find("ldd", "libc-bin"),
	}
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			h.CNIBinDir = d
			break
		}
	}
	if h.CNIBinDir == "" {
		missing = append(missing, "CNI plugins bridge/host-local/loopback in /usr/lib/cni (package containernetworking-plugins)")
	} else {
		for _, p := range []string{"bridge", "host-local", "loopback"} {
			if _, err := os.Stat(filepath.Join(h.CNIBinDir, p)); err != nil {
				missing = append(missing, fmt.Sprintf("CNI plugin %s in %s (package containernetworking-plugins)", p, h.CNIBinDir))
			}
		}
	}
	if h.Busybox != "" && !isStatic(h.Busybox) {
		missing = append(missing, h.Busybox+" is not static (package busybox-static)")
	}
	return h, missing
}

// isStatic reports whether an ELF binary has no program interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// RequireRealNode returns the test-bin binaries and host tools a real node
// needs. It skips the test with the reason when they, or root, are missing
// (or under -short); with SPIREPOD_REQUIRE_TESTBED=1, as `make test` sets,
// it fails instead. Call it before InNetns.
func RequireRealNode(t testing.TB) (Bins, HostTools) {
	t.Helper()
	if testing.Short() {
		t.Skip("real node: skipped under -short")
	}
	b := Bins{Root: DefaultRoot()}
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "not root: containerd, runc and the test's network namespace need root (run the tests as root)")
	}
	if missing := b.Missing(b.RealNodeSet()...); len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d test-bin binaries missing under %s (run `make testbin`): %s",
			len(missing), b.Root, strings.Join(missing, ", ")))
	}
	h, missing := FindHostTools()
	if len(missing) > 0 {
		problems = append(problems, "host packages missing (run `sudo hack/packages.sh` or `make testbin` as root): "+strings.Join(missing, ", "))
	}
	if len(problems) > 0 {
		msg := "real node: " + strings.Join(problems, "; ")
		if os.Getenv("SPIREPOD_REQUIRE_TESTBED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b, h
}
