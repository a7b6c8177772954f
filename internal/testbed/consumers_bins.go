package testbed

import "path/filepath"

// Versions of the registration consumers, as pinned in hack/testbin.
const (
	// SpireControllerManagerVersion turns ClusterStaticEntry (and
	// ClusterSPIFFEID) objects into entries.
	SpireControllerManagerVersion = "v0.6.2"
	// WorkloadRegistrarVersion is the SPIRE release whose
	// k8s-workload-registrar (CRD mode) turns SpiffeID objects into entries.
	// The registrar was deprecated in SPIRE 1.5 and removed in 1.6.
	WorkloadRegistrarVersion = "v1.5.6"
)

// SpireControllerManager is the spire-controller-manager binary.
func (b Bins) SpireControllerManager() string {
	return filepath.Join(b.dir("spire-controller-manager", SpireControllerManagerVersion), "bin", "spire-controller-manager")
}

// SpireControllerManagerCRDs is the directory of its CRDs (config/crd/bases of the module).
func (b Bins) SpireControllerManagerCRDs() string {
	return filepath.Join(b.dir("spire-controller-manager", SpireControllerManagerVersion), "crds")
}

// WorkloadRegistrar is the k8s-workload-registrar binary.
func (b Bins) WorkloadRegistrar() string {
	return filepath.Join(b.dir("k8s-workload-registrar", WorkloadRegistrarVersion), "bin", "k8s-workload-registrar")
}

// WorkloadRegistrarCRDs is the directory holding the SpiffeID CRD.
func (b Bins) WorkloadRegistrarCRDs() string {
	return filepath.Join(b.dir("k8s-workload-registrar", WorkloadRegistrarVersion), "crds")
}

// ControllerManagerSet is what StartSpireControllerManager needs (with a
// cluster and SPIRE): pass it to Require.
func (b Bins) ControllerManagerSet() []string {
	return []string{b.SpireControllerManager(),
		filepath.Join(b.SpireControllerManagerCRDs(), "spire.spiffe.io_clusterstaticentries.yaml")}
}

// RegistrarSet is what StartWorkloadRegistrar needs (with a cluster and SPIRE).
func (b Bins) RegistrarSet() []string {
	return []string{b.WorkloadRegistrar(), filepath.Join(b.WorkloadRegistrarCRDs(), "spiffeid.spiffe.io_spiffeids.yaml")}
}
