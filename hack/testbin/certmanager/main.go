// Command cert-manager-controller is a cut-down cert-manager controller for
// spirepod's local test bed. cert-manager's own cmd/controller is a separate
// Go module that the module proxy does not serve, so this main wires the
// controllers of the root module (github.com/cert-manager/cert-manager) itself.
//
// It runs only what a CA (or SelfSigned) Issuer/ClusterIssuer needs to turn a
// Certificate into a Secret: the issuers and clusterissuers controllers, the
// CertificateRequest approver and CA/SelfSigned signers, and the Certificate
// controllers (trigger, key manager, request manager, issuing, readiness,
// revision manager). There is no leader election, no webhook, no ACME, and no
// metrics or health listener.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each of these registers its controller constructor with
	// controllerpkg.Register in an init function.
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// Issuer backends the issuers/clusterissuers controllers can set up
	// (registered with pkg/issuer's factory in init functions).
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// controllersToRun are the registered controller names this binary starts.
var controllersToRun = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	crapprover.ControllerName,
	crca.CRControllerName,
	crselfsigned.CRControllerName,
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	issuing.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	// A private FlagSet: some dependencies register their own "kubeconfig"
	// flag on flag.CommandLine.
	fs := flag.NewFlagSet("cert-manager-controller", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig file (empty: in-cluster config)")
	master := fs.String("master", "", "optional API server address, overriding the kubeconfig's")
	clusterResourceNamespace := fs.String("cluster-resource-namespace", "cert-manager",
		"namespace holding the Secrets that ClusterIssuers refer to")
	namespace := fs.String("namespace", "", "watch only this namespace (empty: all; disables ClusterIssuers)")
	workers := fs.Int("workers", 2, "worker goroutines per controller")
	qps := fs.Float64("kube-api-qps", 50, "client-side QPS limit (used only when the API server has no priority and fairness)")
	burst := fs.Int("kube-api-burst", 100, "client-side burst limit")
	klog.InitFlags(fs) // -v, -logtostderr, ...
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	logf.InitLogs()
	defer logf.FlushLogs()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	log := logf.FromContext(ctx)

	opts := controllerpkg.ContextOptions{
		APIServerHost:      *master,
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   float32(*qps),
		KubernetesAPIBurst: *burst,
		Namespace:          *namespace,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: *clusterResourceNamespace,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			// Same policy as upstream's defaults: copy every annotation
			// except those written by kubectl and GitOps tools.
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	}

	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		return fmt.Errorf("building controller context: %w", err)
	}

	known := controllerpkg.Known()
	type started struct {
		name string
		ctrl controllerpkg.Interface
	}
	var ctrls []started
	for _, name := range controllersToRun {
		if name == clusterissuers.ControllerName && *namespace != "" {
			log.Info("namespace-scoped: not starting the clusterissuers controller")
			continue
		}
		ctor, ok := known[name]
		if !ok {
			return fmt.Errorf("controller %q is not registered (registered: %s)", name, strings.Join(sortedKeys(known), ", "))
		}
		// Constructing a controller registers the informers it needs with
		// the shared informer factories, so all of them are built before
		// the factories are started.
		c, err := ctor(factory)
		if err != nil {
			return fmt.Errorf("constructing controller %q: %w", name, err)
		}
		ctrls = append(ctrls, started{name, c})
	}

	// Every Context built by the factory shares the same informer factories.
	shared, err := factory.Build("informers")
	if err != nil {
		return fmt.Errorf("building informer context: %w", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(ctrls))
	for _, s := range ctrls {
		wg.Go(func() {
			log.V(logf.InfoLevel).Info("starting controller", "controller", s.name)
			if err := s.ctrl.Run(*workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %q: %w", s.name, err)
				stop()
			}
		})
	}

	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	log.Info("controllers started", "count", len(ctrls), "clusterResourceNamespace", *clusterResourceNamespace)

	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	log.Info("controllers stopped")
	return errors.Join(all...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
