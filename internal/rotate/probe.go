package rotate

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spirepod/spirepod/internal/pki"
)

// ProbeOptions say where the SPIRE server is and how to trust it: what an
// agent of the team has (the server address and the bundle ConfigMap).
type ProbeOptions struct {
	// Server is host:port of the SPIRE server's agent API.
	Server      string
	TrustDomain string
	// Bundle is the server's CA bundle (the scaffold's spire-bundle).
	Bundle []*x509.Certificate
	// Timeout bounds one probe (default 15 s).
	Timeout time.Duration
}

// ProbeFunc attests at the SPIRE server with an agent certificate chain and
// its key, as Probe does: the agent ID, a *RefusedError when the server says
// no, or an *UnreachableError.
type ProbeFunc func(ctx context.Context, chain []*x509.Certificate, key crypto.Signer) (string, error)

// Attest probes the server o names: Probe with o (a ProbeFunc).
func (o ProbeOptions) Attest(ctx context.Context, chain []*x509.Certificate, key crypto.Signer) (string, error) {
	return Probe(ctx, o, chain, key)
}

// ErrNoProbe is a step that must probe the SPIRE server when Run was given
// no Probe (wrapped in an *InputError with Options.NoProbe).
var ErrNoProbe = errors.New("no SPIRE server address and bundle to probe with")

// RefusedError is the server's answer that the leaf does not attest (its
// CA is not on the x509pop trust list, or another x509pop rule failed).
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string {
	return "the SPIRE server refused the attestation: " + e.Err.Error()
}
func (e *RefusedError) Unwrap() error { return e.Err }

// UnreachableError is a probe that never got an answer about the leaf: the
// server could not be reached or its TLS identity not verified.
type UnreachableError struct {
	Server string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the SPIRE server at %s: %v", e.Server, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// RestartingError is a probe that could not reach the server while a
// ReloadWatch still waits for it: the server answered an earlier probe of
// the watch (Answered), or it has not answered for less than the watch's
// Grace. The platform's reload of the x509pop trust list is often a
// restart, right after the merge a waiting run polls for, so the wait goes
// on (the caller's timeout still bounds it). It unwraps to the cause, not
// to *UnreachableError: callers that treat unreachable as a failure do not
// match it.
type RestartingError struct {
	Unreachable *UnreachableError
	Answered    bool
	// For is how long the server has not answered; Grace, the watch's.
	For, Grace time.Duration
}

func (e *RestartingError) Error() string {
	if e.Answered {
		return fmt.Sprintf("the SPIRE server at %s answered before and does not answer now (restarting to reload its trust list?): %v",
			e.Unreachable.Server, e.Unreachable.Err)
	}
	return fmt.Sprintf("the SPIRE server at %s does not answer yet (for %s; restarting to reload its trust list? giving up after %s): %v",
		e.Unreachable.Server, e.For.Round(time.Second), e.Grace, e.Unreachable.Err)
}
func (e *RestartingError) Unwrap() error { return e.Unreachable.Err }

// ReloadGrace is how long a waiting run keeps probing a SPIRE server that
// has not answered at all before it gives up: the platform restarts the
// server to reload the trust list, often right after the merge the run
// waited for (spire-server starts in seconds).
const ReloadGrace = 2 * time.Minute

// ReloadWatch probes one server again and again while waiting for the
// platform to reload it. Once the server has answered (refused or
// attested), a probe that cannot reach it is a *RestartingError. Before
// any answer, it is one for Grace from the first such probe, and an
// *UnreachableError after (Grace 0: at once, so a wrong address fails
// fast).
type ReloadWatch struct {
	Probe ProbeFunc
	Grace time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu       sync.Mutex
	answered bool
	downAt   time.Time // the first unanswered probe since the last answer
}

// NewReloadWatch is the watch of a run: with wait, a server not met yet
// gets ReloadGrace; without (nothing waits), none.
func NewReloadWatch(probe ProbeFunc, wait bool) *ReloadWatch {
	w := &ReloadWatch{Probe: probe}
	if wait {
		w.Grace = ReloadGrace
	}
	return w
}

// Attest probes through w.Probe; see ReloadWatch.
func (w *ReloadWatch) Attest(ctx context.Context, chain []*x509.Certificate, key crypto.Signer) (string, error) {
	id, err := w.Probe(ctx, chain, key)
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	var un *UnreachableError
	w.mu.Lock()
	defer w.mu.Unlock()
	if !errors.As(err, &un) {
		if err == nil || errors.As(err, new(*RefusedError)) {
			w.answered, w.downAt = true, time.Time{}
		}
		return id, err
	}
	if w.downAt.IsZero() {
		w.downAt = now()
	}
	down := now().Sub(w.downAt)
	if w.answered || down < w.Grace {
		return "", &RestartingError{Unreachable: un, Answered: w.answered, For: down, Grace: w.Grace}
	}
	return id, err
}

// ProbeLeaf mints a short-lived agent certificate of ca for a probe: CN
// spirepod-rotation-probe.<namespace> (no node alias selects it, so the
// attested probe receives no SVID of the team), digitalSignature, client
// auth, valid 15 minutes.
func ProbeLeaf(ca *x509.Certificate, caKey crypto.Signer, namespace string, now time.Time, rnd io.Reader) ([]*x509.Certificate, crypto.Signer, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, err
	}
	serial, err := pki.RandomSerial(rnd)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "spirepod-rotation-probe." + namespace},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(15 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rnd, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign the probe certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return []*x509.Certificate{leaf}, key, nil
}

// Probe attests to the SPIRE server with an agent certificate chain and its
// key, as spire-agent's x509pop does (AttestAgent: attestation data, the
// server's nonce challenge signed with the key). It returns the agent ID
// the server issued, a *RefusedError when the server says no, or an
// *UnreachableError. A successful probe leaves an attested agent on the
// server (named by the leaf's fingerprint; it expires with its SVID).
func Probe(ctx context.Context, o ProbeOptions, chain []*x509.Certificate, key crypto.Signer) (string, error) {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return "", err
	}
	serverID, err := spiffeid.FromSegments(td, "spire", "server")
	if err != nil {
		return "", err
	}
	tlsConf := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, o.Bundle), tlsconfig.AuthorizeID(serverID))
	conn, err := grpc.NewClient(o.Server, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return "", &UnreachableError{Server: o.Server, Err: err}
	}
	defer conn.Close()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "AttestAgent", ServerStreams: true, ClientStreams: true},
		"/spire.api.server.agent.v1.Agent/AttestAgent", grpc.ForceCodec(rawCodec{}), grpc.WaitForReady(false))
	if err != nil {
		return "", classify(o.Server, err)
	}
	csrKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, csrKey)
	if err != nil {
		return "", err
	}
	var ders [][]byte
	for _, c := range chain {
		ders = append(ders, c.Raw)
	}
	payload, err := json.Marshal(struct {
		Certificates [][]byte `json:"certificates"`
	}{ders})
	if err != nil {
		return "", err
	}
	first := attestRequestParams("x509pop", payload, csr)
	if err := stream.SendMsg(&first); err != nil {
		return "", classify(o.Server, recvErr(stream, err))
	}
	for {
		var resp []byte
		if err := stream.RecvMsg(&resp); err != nil {
			return "", classify(o.Server, err)
		}
		challenge, svid, err := parseAttestResponse(resp)
		if err != nil {
			return "", err
		}
		if svid != nil {
			_ = stream.CloseSend()
			if len(svid) == 0 {
				return "", errors.New("the server's answer holds no SVID")
			}
			c, err := x509.ParseCertificate(svid[0])
			if err != nil || len(c.URIs) == 0 {
				return "", fmt.Errorf("the server's agent SVID does not parse: %v", err)
			}
			return c.URIs[0].String(), nil
		}
		answer, err := answerChallenge(challenge, key)
		if err != nil {
			return "", err
		}
		msg := protowire.AppendTag(nil, 2, protowire.BytesType)
		msg = protowire.AppendBytes(msg, answer)
		if err := stream.SendMsg(&msg); err != nil {
			return "", classify(o.Server, recvErr(stream, err))
		}
	}
}

// recvErr: a send that fails because the server ended the stream has the
// real status on the next receive.
func recvErr(stream grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		var b []byte
		if rerr := stream.RecvMsg(&b); rerr != nil {
			return rerr
		}
	}
	return err
}

func classify(server string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return &UnreachableError{Server: server, Err: err}
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unimplemented, codes.Unauthenticated:
		return &UnreachableError{Server: server, Err: err}
	}
	return &RefusedError{Err: errors.New(st.Message())}
}

// attestRequestParams encodes AttestAgentRequest{params: {data: {type,
// payload}, params: {csr}}} (spire-api-sdk agent/v1).
func attestRequestParams(typ string, payload, csr []byte) []byte {
	var data []byte
	data = protowire.AppendTag(data, 1, protowire.BytesType)
	data = protowire.AppendString(data, typ)
	data = protowire.AppendTag(data, 2, protowire.BytesType)
	data = protowire.AppendBytes(data, payload)
	var svidParams []byte
	svidParams = protowire.AppendTag(svidParams, 1, protowire.BytesType)
	svidParams = protowire.AppendBytes(svidParams, csr)
	var params []byte
	params = protowire.AppendTag(params, 1, protowire.BytesType)
	params = protowire.AppendBytes(params, data)
	params = protowire.AppendTag(params, 2, protowire.BytesType)
	params = protowire.AppendBytes(params, svidParams)
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	return protowire.AppendBytes(req, params)
}

// parseAttestResponse decodes AttestAgentResponse: a challenge (field 2),
// or a result (field 1) whose svid (1) holds cert_chain (1, repeated).
func parseAttestResponse(b []byte) (challenge []byte, svidChain [][]byte, err error) {
	if ch := repeatedBytes(b, 2); len(ch) > 0 {
		return ch[0], nil, nil
	}
	if res := repeatedBytes(b, 1); len(res) > 0 {
		chain := [][]byte{}
		if svid := repeatedBytes(res[0], 1); len(svid) > 0 {
			chain = repeatedBytes(svid[0], 1)
		}
		return nil, chain, nil
	}
	return nil, nil, errors.New("the server's answer is neither a challenge nor a result")
}

// repeatedBytes returns every length-delimited value of field in a
// protobuf message (a repeated bytes field, or a sub-message), skipping
// every other field; a malformed tail ends the walk.
func repeatedBytes(b []byte, field protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return out
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return out
			}
			if num == field {
				out = append(out, v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return out
		}
		b = b[n:]
	}
	return out
}

// answerChallenge signs x509pop's nonce challenge as SPIRE's agent does:
// SHA-256 over the server's nonce and one of our own, ECDSA (r, s) or RSA-PSS.
func answerChallenge(challenge []byte, key crypto.Signer) ([]byte, error) {
	var ch struct {
		RSA   *struct{ Nonce []byte } `json:"rsa_signature"`
		ECDSA *struct{ Nonce []byte } `json:"ecdsa_signature"`
	}
	if err := json.Unmarshal(challenge, &ch); err != nil {
		return nil, fmt.Errorf("x509pop challenge: %w", err)
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	combine := func(server []byte) ([]byte, error) {
		if len(server) != 32 {
			return nil, errors.New("x509pop challenge: nonce is not 32 bytes")
		}
		h := sha256.New()
		h.Write(server)
		h.Write(nonce)
		return h.Sum(nil), nil
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if ch.ECDSA == nil {
			return nil, errors.New("x509pop: expected an ECDSA challenge")
		}
		digest, err := combine(ch.ECDSA.Nonce)
		if err != nil {
			return nil, err
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"ecdsa_signature": map[string][]byte{"nonce": nonce, "r": r.Bytes(), "s": s.Bytes()}})
	case *rsa.PrivateKey:
		if ch.RSA == nil {
			return nil, errors.New("x509pop: expected an RSA challenge")
		}
		digest, err := combine(ch.RSA.Nonce)
		if err != nil {
			return nil, err
		}
		sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest, nil)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{"rsa_signature": map[string][]byte{"nonce": nonce, "signature": sig}})
	}
	return nil, fmt.Errorf("x509pop: unsupported key %T", key)
}

// rawCodec sends and receives messages already encoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
