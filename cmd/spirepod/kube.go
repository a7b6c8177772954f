package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spirepod/spirepod/internal/apply"
	"github.com/spirepod/spirepod/internal/retry"
)

// kubeFlags are kubectl's --kubeconfig, --context and -n, from cli-runtime.
type kubeFlags struct {
	cf *genericclioptions.ConfigFlags
}

func newKubeFlags() *kubeFlags {
	cf := genericclioptions.NewConfigFlags(false)
	// Only the three flags a user of this tool needs: cli-runtime neither
	// registers nor reads a nil field. Discovery's rate (50 per second,
	// bursts of 300) and cache directory ($KUBECACHEDIR or ~/.kube/cache)
	// are kubectl's.
	cf.WithDiscoveryQPS(50).WithDiscoveryBurst(300)
	cf.CacheDir, cf.ClusterName, cf.AuthInfoName, cf.APIServer, cf.TLSServerName = nil, nil, nil, nil, nil
	cf.Insecure, cf.CertFile, cf.KeyFile, cf.CAFile, cf.BearerToken = nil, nil, nil, nil, nil
	cf.Impersonate, cf.ImpersonateUID, cf.ImpersonateGroup, cf.ImpersonateUserExtra = nil, nil, nil, nil
	cf.Username, cf.Password, cf.Timeout, cf.DisableCompression, cf.ProxyURL = nil, nil, nil, nil, nil
	return &kubeFlags{cf: cf}
}

func (k *kubeFlags) AddFlags(fs *pflag.FlagSet) { k.cf.AddFlags(fs) }

// Namespace returns -n if given, else def.
func (k *kubeFlags) Namespace(def string) string {
	if k.cf.Namespace != nil && *k.cf.Namespace != "" {
		return *k.cf.Namespace
	}
	return def
}

// kubeTarget is the resolved context and its clients: the libraries'
// apply.Target (names, clients, Ping), and what only the CLI needs.
type kubeTarget struct {
	apply.Target
	Config    *rest.Config
	Discovery discovery.CachedDiscoveryInterface
}

// kubeHint is the hint for any failure to reach or configure a cluster.
const kubeHint = "check --kubeconfig and --context (kubectl config get-contexts lists them)"

// Target resolves the kubeconfig and context and builds clients. Nothing is
// contacted yet: discovery is lazy. Every request the clients make ends when
// stop is cancelled (an interrupt), whatever context its caller passed.
func (k *kubeFlags) Target(stop context.Context) (*kubeTarget, error) {
	raw, err := k.cf.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, usageError(kubeHint, "kubeconfig: %v", err)
	}
	if len(raw.Contexts) == 0 && len(raw.Clusters) == 0 {
		files := k.cf.ToRawKubeConfigLoader().ConfigAccess().GetLoadingPrecedence()
		return nil, usageError("point --kubeconfig or KUBECONFIG at your cluster's kubeconfig (or run your provider's get-credentials command)",
			"no kubeconfig: %s has no clusters or contexts (or does not exist)", strings.Join(files, ", "))
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
		sort.Strings(names)
		return nil, usageError(kubeHint, "--context %q not found in the kubeconfig (have: %s)", ctxName, strings.Join(names, ", "))
	}
	// Every client, discovery's too, is made from this config.
	k.cf.WrapConfigFn = func(cfg *rest.Config) *rest.Config {
		cfg.QPS, cfg.Burst = 100, 200
		if os.Getenv("SPIREPOD_HTTP_TRACE") != "" {
			cfg.Wrap(traceTransport)
		}
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &stopTransport{stop: stop, rt: rt} })
		return cfg
	}
	cfg, err := k.cf.ToRESTConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, usageError(kubeHint, "no kubeconfig found")
		}
		return nil, usageError(kubeHint, "kubeconfig: %v", err)
	}
	t := &kubeTarget{Target: apply.Target{Context: ctxName, Cluster: kctx.Cluster, Server: cfg.Host}, Config: cfg}
	t.Ping = t.ping
	if t.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, kubeConfigError(ctxName, kctx.Cluster, err)
	}
	if t.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	// Discovery cached on disk as kubectl caches it (per server, six
	// hours), so a command against a remote cluster does not pay
	// discovery's round trips each run; the mapper refreshes it when a kind
	// is missing.
	if os.Getenv("KUBECACHEDIR") == "" && os.Getenv("HOME") == "" {
		// cli-runtime would cache in ./.kube/cache, in the working
		// directory (the team's scaffold): keep discovery in memory.
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return nil, err
		}
		t.Discovery = memory.NewMemCacheClient(dc)
		t.Mapper = restmapper.NewDeferredDiscoveryRESTMapper(t.Discovery)
		return t, nil
	}
	if t.Discovery, err = k.cf.ToDiscoveryClient(); err != nil {
		return nil, err
	}
	if t.Mapper, err = k.cf.ToRESTMapper(); err != nil {
		return nil, err
	}
	return t, nil
}

// pingBudget bounds ping: an unreachable cluster is reported within it.
var pingBudget = 4 * time.Second

// ping asks the API server for its version. When nothing answers (refused,
// no route, unknown host, dial timeout) it tries again for a few seconds (a
// restarting API server) and then fails with "cluster unreachable" naming
// the server, exit 1, instead of a command waiting out its --timeout. A
// server that answers but is not usable (not an API server, credentials
// refused or not obtainable, a certificate the kubeconfig's CA does not
// sign) fails at once, saying which (explain).
func (t *kubeTarget) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingBudget)
	defer cancel()
	delay := 250 * time.Millisecond
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := t.Client.Discovery().RESTClient().Get().AbsPath("/version").Do(actx).Raw()
		timedOut := actx.Err() != nil // read before acancel cancels it
		acancel()
		if err == nil {
			return nil
		}
		if !retry.Unreachable(err) && !timedOut {
			if e := t.explain(err); e != nil {
				return e
			}
			return nil // it answered (another error status is for the command's own requests to report)
		}
		last = err
		if ctx.Err() != nil || retry.Sleep(ctx, delay) != nil {
			break
		}
		delay = min(2*delay, 2*time.Second)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return t.unreachable(last)
}

// explain says in spirepod's words why the cluster cannot be used, for the
// failures that are not "unreachable": the one place client-go's errors are
// translated (it exports no types for them, so some are known by their
// text). nil when err is none of them.
func (t *kubeTarget) explain(err error) error {
	where := fmt.Sprintf("%s (context %q)", t.Server, t.Context)
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var se apierrors.APIStatus
	msg := err.Error()
	switch {
	case retry.Unreachable(err):
		return t.unreachable(err)
	case strings.Contains(msg, "getting credentials: "):
		_, cause, _ := strings.Cut(msg, "getting credentials: ")
		return failure(fmt.Errorf("cannot get credentials for context %q: its exec plugin failed: %s", t.Context, cause),
			"the kubeconfig's user runs a command for a token (`kubectl config view --minify` shows it): install it, log in again with your provider, or run it yourself to see why")
	case errors.As(err, &ua):
		return failure(fmt.Errorf("the API server at %s presents a certificate that the kubeconfig's certificate-authority-data does not sign", where),
			"re-download the kubeconfig from your provider (certificate-authority-data must be the base64 PEM of the cluster's CA), or check that the server: URL is the cluster's")
	case errors.As(err, &hn), errors.As(err, &ci):
		return failure(fmt.Errorf("the API server's certificate does not fit %s: %v", where, rootCause(err)),
			"check the cluster's server: URL in the kubeconfig (`kubectl config view --minify`)")
	case errors.As(err, &se) && se.Status().Code == http.StatusUnauthorized:
		return failure(fmt.Errorf("the API server at %s refused the credentials (401 Unauthorized)", where),
			"renew them: your provider's get-credentials command, or a new token in the kubeconfig's user")
	case errors.As(err, &se) && se.Status().Code == http.StatusNotFound:
		return failure(fmt.Errorf("%s is not a Kubernetes API server: it answered 404 Not Found for /version", where),
			"check the cluster's server: URL in the kubeconfig (`kubectl config view --minify`): it points at another web server")
	}
	return nil
}

// kubeConfigError explains a kubeconfig whose cluster or user cannot make a
// client: a certificate-authority-data that is not a PEM CA, a client
// certificate and key that do not load.
func kubeConfigError(kubeContext, cluster string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to load root certificates"):
		return usageError("certificate-authority-data must be the base64 of the cluster CA's PEM: re-download the kubeconfig from your provider, or `kubectl config set-cluster "+cluster+" --certificate-authority=ca.pem --embed-certs`",
			"kubeconfig: cluster %q (context %q): certificate-authority-data is not a PEM CA certificate (%v)", cluster, kubeContext, errors.Unwrap(err))
	case strings.Contains(msg, "tls: "), strings.Contains(msg, "client certificate"):
		return usageError("client-certificate-data and client-key-data must be the base64 PEM of a matching pair: re-download the kubeconfig from your provider",
			"kubeconfig: context %q: the user's client certificate does not load: %v", kubeContext, err)
	}
	return usageError(kubeHint, "kubeconfig: context %q: %v", kubeContext, err)
}

// unreachable is the one message for a cluster that does not answer.
func (t *kubeTarget) unreachable(err error) error {
	return failure(fmt.Errorf("cluster unreachable: %s (context %q): %v", t.Server, t.Context, rootCause(err)), kubeHint)
}

// rootCause strips client-go's "Get \"url\": " wrapping down to the
// network error, which is what a user can act on.
func rootCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns
	}
	return err
}

// describe is the one line printed before changing a cluster.
func (t *kubeTarget) describe() string {
	return fmt.Sprintf("context %q (cluster %q at %s)", t.Context, t.Cluster, t.Server)
}

// stopTransport ends every request when stop is cancelled: client-go's
// discovery (behind the RESTMapper) and its rate limiter's waits take no
// context, so without it an interrupted command waits for a server that
// never answers.
type stopTransport struct {
	stop context.Context
	rt   http.RoundTripper
}

func (t *stopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.stop.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(r.Context())
	unbind := context.AfterFunc(t.stop, cancel)
	resp, err := t.rt.RoundTrip(r.WithContext(ctx))
	if err != nil {
		unbind()
		cancel()
		return nil, err
	}
	resp.Body = &stopBody{ReadCloser: resp.Body, done: func() { unbind(); cancel() }}
	return resp, nil
}

// stopBody releases the request's context when its body is closed.
type stopBody struct {
	io.ReadCloser
	done func()
	once sync.Once
}

func (b *stopBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// traceTransport prints every API request with its start (since the first)
// and duration on stderr, for SPIREPOD_HTTP_TRACE=1: how many round trips a
// command makes, and which ones wait for each other.
func traceTransport(rt http.RoundTripper) http.RoundTripper {
	return &tracer{rt: rt, start: time.Now()}
}

type tracer struct {
	rt    http.RoundTripper
	start time.Time
}

func (t *tracer) RoundTrip(r *http.Request) (*http.Response, error) {
	t0 := time.Now()
	resp, err := t.rt.RoundTrip(r)
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	fmt.Fprintf(os.Stderr, "http %7.1fms +%6.1fms %s %s %d\n", float64(t0.Sub(t.start))/1e6, float64(time.Since(t0))/1e6, r.Method, r.URL.RequestURI(), code)
	return resp, err
}
