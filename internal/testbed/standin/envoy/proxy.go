package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// upstreamError is a failure on the way to the upstream, rendered as the
// body of Envoy's local 503 reply.
type upstreamError struct {
	status int
	body   string
	cause  error
}

func (e *upstreamError) Error() string { return e.body + ": " + e.cause.Error() }
func (e *upstreamError) Unwrap() error { return e.cause }

const connectPrefix = "upstream connect error or disconnect/reset before headers. reset reason: "

func errNoHealthyUpstream(err error) error {
	return &upstreamError{status: http.StatusServiceUnavailable, body: "no healthy upstream", cause: err}
}

func errNoSecret(name string) error {
	return &upstreamError{status: http.StatusServiceUnavailable,
		body:  connectPrefix + "connection failure, transport failure reason: TLS error: Secret is not supplied by SDS",
		cause: fmt.Errorf("secret %q is not supplied by SDS", name)}
}

// tlsFailure renders a TLS failure the way Envoy's BoringSSL reports it.
func tlsFailure(err error) error {
	reason := "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
	var verr *verifyError
	if !errors.As(err, &verr) {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "remote error: tls: bad certificate"):
			reason = "TLS_error:|268436498:SSL routines:OPENSSL_internal:SSLV3_ALERT_BAD_CERTIFICATE:TLS_error_end"
		case strings.Contains(msg, "remote error: tls: unknown certificate authority"):
			reason = "TLS_error:|268436502:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA:TLS_error_end"
		case strings.Contains(msg, "remote error: tls: certificate required"):
			reason = "TLS_error:|268436568:SSL routines:OPENSSL_internal:TLSV1_ALERT_CERTIFICATE_REQUIRED:TLS_error_end"
		case strings.Contains(msg, "remote error"):
			reason = "TLS_error:|268435610:SSL routines:OPENSSL_internal:SSLV3_ALERT_HANDSHAKE_FAILURE:TLS_error_end"
		}
	}
	return &upstreamError{status: http.StatusServiceUnavailable,
		body: connectPrefix + "remote connection failure, transport failure reason: " + reason, cause: err}
}

func connectFailure(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &upstreamError{status: http.StatusServiceUnavailable,
			body: connectPrefix + "remote connection failure, transport failure reason: delayed connect error: Connection refused", cause: err}
	case errors.As(err, &ne) && ne.Timeout():
		return &upstreamError{status: http.StatusServiceUnavailable, body: connectPrefix + "connection timeout", cause: err}
	default:
		return &upstreamError{status: http.StatusServiceUnavailable,
			body: connectPrefix + "remote connection failure, transport failure reason: delayed connect error: " + err.Error(), cause: err}
	}
}

// verifyError is a server certificate that fails validation.
type verifyError struct{ err error }

func (e *verifyError) Error() string { return "certificate verify failed: " + e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// upstream dials one cluster.
type upstream struct {
	cp    *clusterPlan
	store *secretStore
	lg    *logger
	tr    *http.Transport
}

func newUpstream(cp *clusterPlan, store *secretStore, lg *logger) *upstream {
	u := &upstream{cp: cp, store: store, lg: lg}
	u.tr = &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return u.dial(ctx) },
		DialTLSContext:      func(ctx context.Context, _, _ string) (net.Conn, error) { return u.dialTLS(ctx) },
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}
	// New secrets apply to new connections: close the idle ones when a
	// secret changes, so the next request handshakes with the rotated SVID.
	// (Envoy keeps pooled connections alive; the stand-in differs here on
	// purpose, so a rotation is visible to the next request.)
	if cp.tls != nil {
		go func() {
			for {
				<-store.changed()
				u.tr.CloseIdleConnections()
			}
		}()
	}
	return u
}

func (u *upstream) scheme() string {
	if u.cp.tls != nil {
		return "https"
	}
	return "http"
}

func (u *upstream) dial(ctx context.Context) (net.Conn, error) {
	if u.cp.host == "" {
		return nil, errNoHealthyUpstream(fmt.Errorf("cluster %s has no socket_address endpoint", u.cp.name))
	}
	host := u.cp.host
	if net.ParseIP(host) == nil {
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			u.lg.debugf("upstream", "DNS resolution for %s failed: %v", host, err)
			return nil, errNoHealthyUpstream(err)
		}
		host = ""
		for _, a := range addrs {
			if a.IP.To4() != nil || !u.cp.v4Only {
				host = a.IP.String()
				break
			}
		}
		if host == "" {
			return nil, errNoHealthyUpstream(fmt.Errorf("no IPv4 address for %s", u.cp.host))
		}
	}
	d := net.Dialer{Timeout: u.cp.connectTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(u.cp.port)))
	if err != nil {
		u.lg.debugf("connection", "delayed connect error to %s: %v", u.cp.name, err)
		return nil, connectFailure(err)
	}
	return conn, nil
}

func (u *upstream) dialTLS(ctx context.Context) (net.Conn, error) {
	tp := u.cp.tls
	var cert *tls.Certificate
	for _, n := range tp.certNames {
		if cert = u.store.cert(n); cert != nil {
			break
		}
	}
	if cert == nil && len(tp.certNames) > 0 {
		return nil, errNoSecret(tp.certNames[0])
	}
	var val *validation
	if tp.validationName != "" {
		if val = u.store.validation(tp.validationName); val == nil {
			return nil, errNoSecret(tp.validationName)
		}
	}
	raw, err := u.dial(ctx)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		ServerName:         tp.sni,
		InsecureSkipVerify: true, // verified below, the way Envoy does (chain + SAN matchers, no host name)
		MinVersion:         tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyPeer(cs, val, tp.static); err != nil {
				return &verifyError{err}
			}
			return nil
		},
	}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, u.cp.connectTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		u.lg.debugf("connection", "remote address:%s,TLS_error: %v", raw.RemoteAddr(), err)
		return nil, tlsFailure(err)
	}
	return conn, nil
}

// verifyPeer checks the server's chain against the SDS validation context
// (SPIFFE validator: the bundle of the trust domain in the leaf's SPIFFE ID;
// else trusted_ca) and the SAN matchers of the static and dynamic contexts.
func verifyPeer(cs tls.ConnectionState, v *validation, static *tlsv3.CertificateValidationContext) error {
	if v == nil && static == nil {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if v != nil {
		roots := v.trustedCA
		if v.spiffe != nil {
			if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
				return fmt.Errorf("peer certificate has %d URI SANs, want exactly one SPIFFE ID", len(leaf.URIs))
			}
			if leaf.IsCA {
				return errors.New("peer certificate is a CA")
			}
			td := leaf.URIs[0].Host
			if roots = v.spiffe[td]; roots == nil {
				return fmt.Errorf("no trust bundle for trust domain %q", td)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return err
		}
	}
	var sans []*tlsv3.SubjectAltNameMatcher
	sans = append(sans, static.GetMatchTypedSubjectAltNames()...)
	if v != nil {
		sans = append(sans, v.static.GetMatchTypedSubjectAltNames()...)
	}
	if len(sans) == 0 {
		return nil
	}
	for _, m := range sans {
		var values []string
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_URI:
			for _, u := range leaf.URIs {
				values = append(values, u.String())
			}
		case tlsv3.SubjectAltNameMatcher_DNS:
			values = leaf.DNSNames
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			values = leaf.EmailAddresses
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			for _, ip := range leaf.IPAddresses {
				values = append(values, ip.String())
			}
		}
		for _, val := range values {
			if stringMatch(m.GetMatcher(), val) {
				return nil
			}
		}
	}
	return errors.New("peer certificate SANs match none of match_typed_subject_alt_names")
}

func stringMatch(m *matcherv3.StringMatcher, s string) bool {
	if m.GetIgnoreCase() {
		s = strings.ToLower(s)
	}
	low := func(p string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(p)
		}
		return p
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == low(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, low(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, low(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(s, low(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

// proxyHandler routes a listener's requests to their clusters.
func proxyHandler(l listenerPlan, clusters map[string]*clusterPlan, store *secretStore, lg *logger) http.Handler {
	var mu sync.Mutex
	ups := map[string]*upstream{}
	get := func(name string) *upstream {
		mu.Lock()
		defer mu.Unlock()
		if u, ok := ups[name]; ok {
			return u
		}
		u := newUpstream(clusters[name], store, lg)
		ups[name] = u
		return u
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := findRoute(l.vhost, r)
		if route == nil || route.GetRoute().GetCluster() == "" {
			w.Header().Set("Server", "envoy")
			w.WriteHeader(http.StatusNotFound)
			return
		}
		u := get(route.GetRoute().GetCluster())
		timeout := 15 * time.Second
		if t := route.GetRoute().GetTimeout(); t != nil {
			timeout = t.AsDuration()
		}
		start := time.Now()
		ctx := r.Context()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		rp := &httputil.ReverseProxy{
			Transport: u.tr,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = u.scheme()
				pr.Out.URL.Host = u.cp.name
				pr.Out.Host = pr.In.Host
				pr.Out.Header.Set("X-Forwarded-Proto", "http")
				pr.Out.Header.Set("X-Request-Id", requestID())
				pr.Out.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(timeout.Milliseconds(), 10))
			},
			ModifyResponse: func(resp *http.Response) error {
				resp.Header.Set("Server", "envoy")
				resp.Header.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				status, body := http.StatusServiceUnavailable, ""
				var ue *upstreamError
				switch {
				case errors.As(err, &ue):
					status, body = ue.status, ue.body
				case errors.Is(err, context.DeadlineExceeded):
					status, body = http.StatusGatewayTimeout, "upstream request timeout"
				case strings.Contains(err.Error(), "tls:"):
					body = tlsFailure(err).(*upstreamError).body
				default:
					body = connectPrefix + "connection termination"
				}
				lg.debugf("router", "upstream reset: cluster %s: %v", u.cp.name, err)
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Server", "envoy")
				w.WriteHeader(status)
				fmt.Fprint(w, body)
			},
		}
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

func findRoute(vhosts []*routev3.VirtualHost, r *http.Request) *routev3.Route {
	host := strings.ToLower(r.Host)
	hostNoPort := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostNoPort = h
	}
	for _, vh := range vhosts {
		ok := false
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*", d == host, d == hostNoPort:
				ok = true
			case strings.HasPrefix(d, "*") && (strings.HasSuffix(host, d[1:]) || strings.HasSuffix(hostNoPort, d[1:])):
				ok = true
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]):
				ok = true
			}
		}
		if !ok {
			continue
		}
		for _, rt := range vh.GetRoutes() {
			m := rt.GetMatch()
			switch p := m.GetPathSpecifier().(type) {
			case *routev3.RouteMatch_Prefix:
				if strings.HasPrefix(r.URL.Path, p.Prefix) {
					return rt
				}
			case *routev3.RouteMatch_Path:
				if r.URL.Path == p.Path {
					return rt
				}
			case *routev3.RouteMatch_SafeRegex:
				if re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$"); err == nil && re.MatchString(r.URL.Path) {
					return rt
				}
			}
		}
		return nil
	}
	return nil
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
