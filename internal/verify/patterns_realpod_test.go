package verify

import (
	"strings"
	"testing"
)

// TestPatternsRealPod: the lines the real node's pods wrote for each
// deliberate break (e2e TestRealPodBreak…, copied from its log) land on the
// pattern that names the layer, not on a generic one.
func TestPatternsRealPod(t *testing.T) {
	tests := []struct {
		name, container, line, want, mention string
	}{
		{"key written by another user", ContainerAgent,
			`time="2026-11-29T22:45:23Z" level=error msg="Agent crashed" error="failed to configure plugin \"x509pop\": rpc error: code = InvalidArgument desc = unable to load keypair: open /run/spire/agent-certs/agent.key.pem: permission denied"`,
			"agent-key-unreadable", "same runAsUser"},
		{"pod without shareProcessNamespace", ContainerAgent,
			`time="2026-11-29T22:46:02Z" level=warning msg="Connection failed during accept" error="could not resolve caller information" subsystem_name=endpoints`,
			"agent-no-shared-pid", "shareProcessNamespace: true"},
		{"caller's proc directory unreadable", ContainerAgent,
			`level=warning msg="Connection failed during accept" error="could not open caller's proc directory: permission denied" subsystem_name=endpoints`,
			"agent-no-shared-pid", "shareProcessNamespace: true"},
		{"wrong upstream SPIFFE ID", ContainerCurl,
			`upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end`,
			"curl-upstream-tls", "upstream.spiffeID"},
		// A server that is down is still an attestation/connectivity
		// problem, not a key one.
		{"server refused", ContainerAgent,
			`level=error msg="Agent crashed" error="failed to dial: dial tcp 10.0.0.1:8081: connect: connection refused"`,
			"agent-attestation-failed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := MatchPattern(tt.container, tt.line)
			if !ok || p.ID != tt.want {
				t.Fatalf("MatchPattern = %q (%v), want %q", p.ID, ok, tt.want)
			}
			if !strings.Contains(p.Cause+" "+p.Fix, tt.mention) {
				t.Errorf("%s: cause and fix do not mention %q:\n%s\n%s", p.ID, tt.mention, p.Cause, p.Fix)
			}
		})
	}
}
