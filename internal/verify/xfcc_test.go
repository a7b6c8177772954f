package verify

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const wantID = "spiffe://spire.cityos-dev.woven-planet.tech/ns/team-a/sa/httpbin-client"

func TestMatchLine(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		found   bool
		matched bool
		uris    []string
	}{
		{name: "httpbin JSON echo",
			line:  `    "X-Forwarded-Client-Cert": "By=spiffe://spire.cityos-dev.woven-planet.tech/ns/echo/sa/httpbin;Hash=4b7f1e;Subject=\"\";URI=` + wantID + `"`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "raw header line, lower-case name",
			line:  `x-forwarded-client-cert: Hash=ab;URI=` + wantID,
			found: true, matched: true, uris: []string{wantID}},
		{name: "a longer ID is not a match",
			line:  `"X-Forwarded-Client-Cert": "Hash=ab;URI=` + wantID + `-v2"`,
			found: true, matched: false, uris: []string{wantID + "-v2"}},
		{name: "a path below the ID is not a match",
			line:  `"X-Forwarded-Client-Cert": "Hash=ab;URI=` + wantID + `/extra"`,
			found: true, matched: false, uris: []string{wantID + "/extra"}},
		{name: "the ID inside By is not a match",
			line:  `"X-Forwarded-Client-Cert": "By=` + wantID + `;Hash=ab;URI=spiffe://other/ns/x/sa/y"`,
			found: true, matched: false, uris: []string{"spiffe://other/ns/x/sa/y"}},
		{name: "several elements: the last one (the upstream's) is judged",
			line:  `"X-Forwarded-Client-Cert": "By=spiffe://a/b;Hash=1;URI=spiffe://edge/ns/gw/sa/gw,By=spiffe://a/c;Hash=2;URI=` + wantID + `"`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "a forged earlier element does not match",
			line:  `"X-Forwarded-Client-Cert": "By=spiffe://a/c;Hash=1;URI=` + wantID + `,By=spiffe://a/c;Hash=2;URI=spiffe://intruder/x"`,
			found: true, matched: false, uris: []string{"spiffe://intruder/x"}},
		{name: "invalid UTF-8 before the header does not shift it",
			line:  "\xff\xff\xff\xff\xff" + `"X-Forwarded-Client-Cert": "Hash=1;URI=` + wantID + `"`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "12 bytes of 0xff before the header (crashed the parser)",
			line:  strings.Repeat("\xff", 12) + `x-forwarded-client-cert: Hash=1;URI=` + wantID,
			found: true, matched: true, uris: []string{wantID}},
		{name: "quoted subject with comma and semicolon does not split",
			line:  `"X-Forwarded-Client-Cert": "Hash=1;Subject=\"CN=x,O=a;b\";URI=` + wantID + `"`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "quoted URI value",
			line:  `"X-Forwarded-Client-Cert": "Hash=1;URI=\"` + wantID + `\""`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "lower-case keys",
			line:  `"x-forwarded-client-cert": "hash=1;uri=` + wantID + `"`,
			found: true, matched: true, uris: []string{wantID}},
		{name: "header without URI",
			line:  `"X-Forwarded-Client-Cert": "By=spiffe://a/b;Hash=1"`,
			found: true, matched: false, uris: nil},
		{name: "URI= elsewhere in the line, no header",
			line:  `GET /headers URI=` + wantID,
			found: false},
		{name: "no header", line: `{"headers": {`, found: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, found := MatchLine(tt.line, wantID, "")
			if found != tt.found || s.Matched != tt.matched || !reflect.DeepEqual(s.URIs, tt.uris) {
				t.Errorf("MatchLine = %+v, %v; want matched=%v uris=%v found=%v", s, found, tt.matched, tt.uris, tt.found)
			}
		})
	}
}

// TestMatchLineUpstream: with the upstream's ID known, only the element it
// appended (By=upstream) is judged, wherever an attacker put others.
func TestMatchLineUpstream(t *testing.T) {
	const up = "spiffe://spire.cityos-dev.woven-planet.tech/ns/spire-sample/sa/httpbin"
	for _, tt := range []struct {
		name, value         string
		matched, noUpstream bool
	}{
		{"the upstream's element", "By=" + up + ";Hash=1;URI=" + wantID, true, false},
		{"a forged element after the upstream's is not judged", "By=" + up + ";Hash=1;URI=spiffe://x/y,By=spiffe://evil/e;URI=" + wantID, false, false},
		{"no element by the upstream", "By=spiffe://evil/e;Hash=1;URI=" + wantID, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, found := MatchLine(`x-forwarded-client-cert: `+tt.value, wantID, up)
			if !found || s.Matched != tt.matched || s.NoUpstream != tt.noUpstream {
				t.Errorf("MatchLine = %+v, %v; want matched=%v noUpstream=%v", s, found, tt.matched, tt.noUpstream)
			}
		})
	}
}

// FuzzMatchLine: any bytes, no panic; a match is always the expected ID in
// the judged element.
func FuzzMatchLine(f *testing.F) {
	f.Add(strings.Repeat("\xff", 12) + "x-forwarded-client-cert: URI=" + wantID)
	f.Add(`"X-Forwarded-Client-Cert": "By=a;Hash=1;Subject=\"CN=x,O=a;b\";URI=` + wantID + `"`)
	f.Add("\xc3X-FORWARDED-CLIENT-CERT\": \"URI=\\\"")
	f.Add("")
	f.Fuzz(func(t *testing.T, line string) {
		s, found := MatchLine(line, wantID, "")
		if s.Matched && (!found || !contains(s.URIs, wantID)) {
			t.Fatalf("matched without the ID: %+v", s)
		}
		FindXFCC(line)
	})
}

func TestParseXFCC(t *testing.T) {
	got := ParseXFCC(`By=spiffe://a/x;By=http://b;Hash=abc;Cert="-----BEGIN%20CERT";Subject="/C=US/CN=c";URI=spiffe://a/y;DNS=one;DNS=two`)
	want := []Element{{By: []string{"spiffe://a/x", "http://b"}, Hash: "abc", Subject: "/C=US/CN=c", URI: []string{"spiffe://a/y"}, DNS: []string{"one", "two"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseXFCC = %+v, want %+v", got, want)
	}
}

func TestSplitTimestamp(t *testing.T) {
	ts, rest := splitTimestamp("2026-01-02T03:04:05.123456789Z hello world\n")
	if ts.IsZero() || rest != "hello world\n" || ts.Nanosecond() != 123456789 {
		t.Errorf("splitTimestamp = %v, %q", ts, rest)
	}
	if ts, rest := splitTimestamp("no timestamp here"); !ts.Equal(time.Time{}) || rest != "no timestamp here" {
		t.Errorf("splitTimestamp without stamp = %v, %q", ts, rest)
	}
}

// TestPatterns: each real message lands on its pattern, and lines that are
// not errors land on none.
func TestPatterns(t *testing.T) {
	tests := []struct {
		container, line, want string
	}{
		{ContainerAgent, `time="2026-01-01T00:00:00Z" level=error msg="Agent crashed" error="failed to get SVID: rpc error: code = Internal desc = failed to attest: x509pop: unable to generate challenge: certificate not intended for digital signature use"`, "agent-no-digital-signature"},
		{ContainerAgent, `time="2026-01-01T00:00:00Z" level=error msg="Agent crashed" error="rpc error: code = PermissionDenied desc = failed to attest: x509pop: certificate verification failed: x509: certificate signed by unknown authority"`, "agent-ca-not-trusted"},
		{ContainerAgent, `level=error msg="Agent crashed" error="... x509pop: certificate verification failed: x509: certificate signed by unknown authority (possibly because of \"x509: invalid signature: parent certificate cannot sign this kind of certificate\" while trying to verify candidate authority certificate \"team\")"`, "agent-ca-not-trusted"},
		{ContainerAgent, `level=error msg="Agent crashed" error="create attestation client: failed to dial: connection error: desc = \"transport: authentication handshake failed: x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority\""`, "agent-server-not-trusted"},
		{ContainerAgent, `time="2026-01-01T00:00:00Z" level=error msg="No identity issued" method=FetchX509SVID pid=42 registered=false service=WorkloadAPI subsystem_name=endpoints`, "agent-no-identity"},
		{ContainerAgent, `level=error msg="Agent crashed" error="failed to attest: x509: certificate has expired or is not yet valid"`, "agent-cert-expired"},
		{ContainerAgent, `level=error msg="Agent crashed" error="failed to dial: dial tcp 10.0.0.1:8081: connect: connection refused"`, "agent-attestation-failed"},
		{ContainerAgent, `level=warning msg="Failed to fetch bundle" error="dial tcp: lookup spire-server.example: no such host"`, "agent-server-unreachable"},
		{ContainerAgent, `level=info msg="Node attestation was successful" spiffe_id="spiffe://td/spire/agent/x509pop/spire-agent-x509pop-sts-0"`, ""},
		{ContainerEnvoy, `[warning][config] StreamSecrets gRPC config stream to spire_agent closed: 14, upstream connect error or disconnect/reset before headers`, "envoy-sds-rejected"},
		{ContainerEnvoy, `[debug][connection] remote address:10.0.0.5:443,TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end`, "envoy-upstream-tls"},
		{ContainerEnvoy, `[info][main] starting main dispatch loop`, ""},
		{ContainerCurl, `upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end`, "curl-upstream-tls"},
		{ContainerCurl, `no healthy upstream`, "curl-upstream-error"},
		{ContainerCurl, `curl: (7) Failed to connect to 127.0.0.1 port 8080 after 0 ms: Couldn't connect to server`, "curl-envoy-unreachable"},
		{ContainerCurl, `curl: request to envoy failed`, "curl-envoy-unreachable"},
		{ContainerCurl, `    "Host": "httpbin.echo.svc",`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want+"/"+tt.container, func(t *testing.T) {
			p, ok := MatchPattern(tt.container, tt.line)
			if got := map[bool]string{true: p.ID}[ok]; got != tt.want {
				t.Errorf("MatchPattern(%s, %q) = %q, want %q", tt.container, tt.line, got, tt.want)
			}
		})
	}
	ids := map[string]bool{}
	for _, p := range Patterns {
		if ids[p.ID] {
			t.Errorf("duplicate pattern ID %s", p.ID)
		}
		ids[p.ID] = true
		if p.Cause == "" || p.Fix == "" {
			t.Errorf("pattern %s needs a cause and a fix", p.ID)
		}
	}
}

func TestMatchLogTakesLatest(t *testing.T) {
	f, ok := MatchLog(ContainerAgent, []string{
		`level=error msg="Agent crashed" error="x509pop: certificate verification failed: x509: certificate signed by unknown authority"`,
		`level=info msg="Starting agent"`,
		`level=error msg="No identity issued" registered=false`,
	})
	if !ok || f.Pattern.ID != "agent-no-identity" {
		t.Errorf("MatchLog = %+v, %v; want the latest error (agent-no-identity)", f, ok)
	}
}
