package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are kubectl's --kubeconfig, --context and -n, from cli-runtime.
type kubeFlags struct {
	cf *genericclioptions.ConfigFlags
}

func newKubeFlags() *kubeFlags {
	cf := genericclioptions.NewConfigFlags(false)
	// Only the three flags a user of this tool needs; nil pointers are not registered.
	keep := genericclioptions.ConfigFlags{
		KubeConfig: cf.KubeConfig,
		Context:    cf.Context,
		Namespace:  cf.Namespace,
	}
	kf := &kubeFlags{cf: &keep}
	return kf
}

func (k *kubeFlags) AddFlags(fs *pflag.FlagSet) { k.cf.AddFlags(fs) }

// Namespace returns -n if given, else def.
func (k *kubeFlags) Namespace(def string) string {
	if k.cf.Namespace != nil && *k.cf.Namespace != "" {
		return *k.cf.Namespace
	}
	return def
}

// kubeTarget is the resolved context and its clients.
type kubeTarget struct {
	Context   string
	Cluster   string
	Server    string
	Config    *rest.Config
	Client    kubernetes.Interface
	Dynamic   dynamic.Interface
	Mapper    meta.RESTMapper
	Discovery discovery.CachedDiscoveryInterface
}

// kubeHint is the hint for any failure to reach or configure a cluster.
const kubeHint = "check --kubeconfig and --context (kubectl config get-contexts lists them)"

// Target resolves the kubeconfig and context and builds clients. Nothing is
// contacted yet: discovery is lazy.
func (k *kubeFlags) Target() (*kubeTarget, error) {
	raw, err := k.cf.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, usageError(kubeHint, "kubeconfig: %v", err)
	}
	ctxName := raw.CurrentContext
	if k.cf.Context != nil && *k.cf.Context != "" {
		ctxName = *k.cf.Context
	}
	if ctxName == "" {
		return nil, usageError(kubeHint, "no kube context: the kubeconfig has no current-context and --context is not set")
	}
	kctx, ok := raw.Contexts[ctxName]
	if !ok {
		names := make([]string, 0, len(raw.Contexts))
		for n := range raw.Contexts {
			names = append(names, n)
		}
		return nil, usageError(kubeHint, "--context %q not found in the kubeconfig (have: %s)", ctxName, strings.Join(names, ", "))
	}
	cfg, err := k.cf.ToRESTConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, usageError(kubeHint, "no kubeconfig found")
		}
		return nil, usageError(kubeHint, "kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	t := &kubeTarget{Context: ctxName, Cluster: kctx.Cluster, Config: cfg, Server: cfg.Host}
	if t.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if t.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	t.Discovery = memory.NewMemCacheClient(dc)
	t.Mapper = restmapper.NewDeferredDiscoveryRESTMapper(t.Discovery)
	return t, nil
}

// describe is the one line printed before changing a cluster.
func (t *kubeTarget) describe() string {
	return fmt.Sprintf("context %q (cluster %q at %s)", t.Context, t.Cluster, t.Server)
}
