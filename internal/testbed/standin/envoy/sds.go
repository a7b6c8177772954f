package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// validation is a validation-context secret: plain trusted CAs, or SPIRE's
// SPIFFE certificate validator (one bundle per trust domain).
type validation struct {
	trustedCA *x509.CertPool
	spiffe    map[string]*x509.CertPool // trust domain name → bundle
	static    *tlsv3.CertificateValidationContext
}

// secretStore holds the secrets the SDS streams delivered, by name.
type secretStore struct {
	mu    sync.Mutex
	certs map[string]*tls.Certificate
	vals  map[string]*validation
	ch    chan struct{}
}

func newSecretStore() *secretStore {
	return &secretStore{certs: map[string]*tls.Certificate{}, vals: map[string]*validation{}, ch: make(chan struct{})}
}

// changed is closed at the next update.
func (s *secretStore) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *secretStore) notify() {
	close(s.ch)
	s.ch = make(chan struct{})
}

func (s *secretStore) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.certs[name] != nil || s.vals[name] != nil
}

func (s *secretStore) cert(name string) *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.certs[name]
}

func (s *secretStore) validation(name string) *validation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vals[name]
}

func (s *secretStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.certs {
		out = append(out, n)
	}
	for n := range s.vals {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// apply parses a Secret and stores it under its name.
func (s *secretStore) apply(sec *tlsv3.Secret) error {
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		chain, err := inline(t.TlsCertificate.GetCertificateChain())
		if err != nil {
			return fmt.Errorf("certificate_chain: %w", err)
		}
		key, err := inline(t.TlsCertificate.GetPrivateKey())
		if err != nil {
			return fmt.Errorf("private_key: %w", err)
		}
		pair, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return err
		}
		if pair.Leaf == nil {
			if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return err
			}
		}
		s.mu.Lock()
		s.certs[sec.GetName()] = &pair
		s.notify()
		s.mu.Unlock()
	case *tlsv3.Secret_ValidationContext:
		v, err := parseValidation(t.ValidationContext)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.vals[sec.GetName()] = v
		s.notify()
		s.mu.Unlock()
	default:
		return fmt.Errorf("secret %q: unsupported type %T", sec.GetName(), t)
	}
	return nil
}

func inline(ds *corev3.DataSource) ([]byte, error) {
	switch {
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes(), nil
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString()), nil
	default:
		return nil, errors.New("only inline data sources are supported here")
	}
}

func poolFromPEM(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no certificates in the bundle")
	}
	return pool, nil
}

func parseValidation(vc *tlsv3.CertificateValidationContext) (*validation, error) {
	v := &validation{static: vc}
	if ca := vc.GetTrustedCa(); ca != nil {
		b, err := inline(ca)
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		if v.trustedCA, err = poolFromPEM(b); err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
	}
	if cv := vc.GetCustomValidatorConfig(); cv != nil {
		if cv.GetName() != "envoy.tls.cert_validator.spiffe" {
			return nil, fmt.Errorf("custom_validator_config %q is not supported here", cv.GetName())
		}
		sc := &tlsv3.SPIFFECertValidatorConfig{}
		if err := cv.GetTypedConfig().UnmarshalTo(sc); err != nil {
			return nil, err
		}
		v.spiffe = map[string]*x509.CertPool{}
		for _, td := range sc.GetTrustDomains() {
			b, err := inline(td.GetTrustBundle())
			if err != nil {
				return nil, fmt.Errorf("trust domain %s: %w", td.GetName(), err)
			}
			if v.spiffe[td.GetName()], err = poolFromPEM(b); err != nil {
				return nil, fmt.Errorf("trust domain %s: %w", td.GetName(), err)
			}
		}
	}
	if v.trustedCA == nil && v.spiffe == nil {
		return nil, errors.New("validation context has neither trusted_ca nor the SPIFFE validator")
	}
	return v, nil
}

// streamNode is the node the stand-in announces: the bootstrap's, with
// Envoy's user agent and the emulated build version.
func streamNode(n *corev3.Node) *corev3.Node {
	out := &corev3.Node{}
	if n != nil {
		out = proto.Clone(n).(*corev3.Node)
	}
	out.UserAgentName = "envoy"
	out.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
		Version: &typev3.SemanticVersion{MajorNumber: standinVersion[0], MinorNumber: standinVersion[1], Patch: standinVersion[2]},
	}}
	return out
}

// streamSecrets keeps one StreamSecrets stream for one secret open until
// ctx ends, re-opening it with backoff when it closes, as Envoy does.
func streamSecrets(ctx context.Context, node *corev3.Node, sub sdsSub, store *secretStore, lg *logger) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		got, err := oneStream(ctx, streamNode(node), sub, store, lg)
		if ctx.Err() != nil {
			return
		}
		st, _ := status.FromError(err)
		lg.warnf("config", "StreamSecrets gRPC config stream to %s closed: %d, %s", sub.cluster, st.Code(), st.Message())
		if got {
			backoff = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 5*time.Second {
			backoff = 5 * time.Second
		}
	}
}

// oneStream runs one stream; got reports whether it delivered a response.
func oneStream(ctx context.Context, node *corev3.Node, sub sdsSub, store *secretStore, lg *logger) (got bool, err error) {
	conn, err := grpc.NewClient("unix://"+sub.pipe, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, status.Error(codes.Unavailable, err.Error())
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(sctx, grpc.WaitForReady(false))
	if err != nil {
		return false, err
	}
	req := &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: []string{sub.name}, TypeUrl: secretTypeURL}
	if err := stream.Send(req); err != nil {
		_, err = stream.Recv() // the real status
		return false, err
	}
	version := ""
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.OK, "")
			}
			return got, err
		}
		got = true
		var applyErr error
		found := false
		for _, res := range resp.GetResources() {
			sec := &tlsv3.Secret{}
			if err := res.UnmarshalTo(sec); err != nil {
				applyErr = err
				break
			}
			if sec.GetName() != sub.name {
				continue
			}
			found = true
			if err := store.apply(sec); err != nil {
				applyErr = fmt.Errorf("secret %s: %w", sec.GetName(), err)
				break
			}
		}
		ack := &discoveryv3.DiscoveryRequest{ResourceNames: []string{sub.name}, TypeUrl: secretTypeURL, ResponseNonce: resp.GetNonce()}
		switch {
		case applyErr != nil:
			lg.warnf("config", "gRPC config for %s rejected: %v", secretTypeURL, applyErr)
			ack.VersionInfo = version
			ack.ErrorDetail = status.New(codes.InvalidArgument, applyErr.Error()).Proto()
		case !found:
			lg.debugf("config", "gRPC config for %s: response version %s without %s", secretTypeURL, resp.GetVersionInfo(), sub.name)
			version = resp.GetVersionInfo()
			ack.VersionInfo = version
		default:
			version = resp.GetVersionInfo()
			ack.VersionInfo = version
			lg.debugf("config", "SDS: secret %s updated (version %s)", sub.name, version)
		}
		if err := stream.Send(ack); err != nil {
			_, err = stream.Recv()
			return got, err
		}
	}
}
