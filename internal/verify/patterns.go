package verify

import (
	"regexp"
	"strings"
)

// Pattern maps a known log message of one container to its cause and fix.
// The table is ordered: for a line, the first matching pattern wins, so more
// specific patterns come before general ones.
type Pattern struct {
	// ID is stable (it appears in -o json and tests).
	ID string
	// Container is the container whose log the pattern applies to.
	Container string
	// Match is tested against each log line.
	Match *regexp.Regexp
	// Cause says what the message means for this setup.
	Cause string
	// Fix is the command or change that fixes it.
	Fix string
}

// Containers of the scaffold's StatefulSet.
const (
	ContainerGenCert = "gen-cert"
	ContainerAgent   = "spire-agent"
	ContainerEnvoy   = "envoy"
	ContainerCurl    = "curl"
)

// Patterns is the table of known messages. The SPIRE ones are the real
// strings of spire-server/agent v1.13 (pkg/common/plugin/x509pop,
// pkg/server/plugin/nodeattestor/x509pop, pkg/agent/endpoints/workload);
// the Envoy and curl ones are their usual wording.
var Patterns = []Pattern{
	{
		ID: "agent-no-digital-signature", Container: ContainerAgent,
		Match: regexp.MustCompile(`certificate not intended for digital signature use`),
		Cause: "the SPIRE server refused the agent certificate: its keyUsage lacks digitalSignature",
		Fix:   `list "digital signature" (with "client auth") in the usages of cert.yaml.tpl (re-run ` + "`spirepod init --force`" + `), then delete the agent Certificate and Secret and restart the pod`,
	},
	{
		// x509: certificate signed by unknown authority while the server
		// verifies the agent's certificate: the team CA is not (yet) in the
		// server's x509pop trust bundle.
		ID: "agent-ca-not-trusted", Container: ContainerAgent,
		Match: regexp.MustCompile(`(x509pop|certificate verification failed).*signed by unknown authority`),
		Cause: "the SPIRE server does not trust the team CA that issued the agent certificate: the trust-list PR is not merged, or the SPIRE server was not restarted after it was (it reads its CA bundle only at start)",
		Fix:   "`spirepod pr status` (merge the trust-ca PR), then ask the SPIRE operators to restart the server",
	},
	{
		ID: "agent-ca-cannot-sign", Container: ContainerAgent,
		Match: regexp.MustCompile(`parent certificate cannot sign this kind of certificate`),
		Cause: "the team CA is not a usable CA (basicConstraints CA:TRUE or keyCertSign missing), so the server rejects every agent certificate it issued",
		Fix:   "`spirepod pki inspect`, then `spirepod pki gen --force` and a new trust-ca PR",
	},
	{
		// The agent does not trust the server's certificate: the bundle
		// ConfigMap holds the wrong server CA.
		ID: "agent-server-not-trusted", Container: ContainerAgent,
		Match: regexp.MustCompile(`(authentication handshake failed|x509svid: could not verify).*(signed by unknown authority|could not verify)`),
		Cause: "the agent does not trust the SPIRE server's certificate: the spire-bundle ConfigMap does not hold this server's CA",
		Fix:   "`spirepod bundle set SERVER_CA.pem` with the CA of this environment's server, `spirepod apply`, then restart the pod",
	},
	{
		ID: "agent-ca-unknown-generic", Container: ContainerAgent,
		Match: regexp.MustCompile(`signed by unknown authority`),
		Cause: "a certificate signed by an unknown authority: the trust-list PR is not merged or the SPIRE server was not restarted after it was",
		Fix:   "`spirepod pr status` (merge the trust-ca PR), then ask the SPIRE operators to restart the server",
	},
	{
		ID: "agent-cert-expired", Container: ContainerAgent,
		Match: regexp.MustCompile(`certificate has expired or is not yet valid`),
		Cause: "the agent certificate (or the team CA) is outside its validity period",
		Fix:   "`spirepod pki inspect`; delete the agent Certificate and Secret and restart the pod to issue a fresh one",
	},
	{
		ID: "agent-no-identity", Container: ContainerAgent,
		Match: regexp.MustCompile(`(?i)no identity issued`),
		Cause: "the agent has no registration entry for Envoy: the SPIFFE ID PR is not merged, or its parentId is not the node alias spiffe://<td>/spire-agent-x509pop-<pod>, or the selectors do not match Envoy",
		Fix:   "`spirepod pr status` (merge the spiffe-id PR); `spirepod pr spiffe-id --dry-run` shows the entries it expects",
	},
	{
		// The x509pop agent plugin loads certificate_path and
		// private_key_path when it is configured; seen on the real node when
		// gen-cert (which writes the key 0600, as its own user) and the agent
		// run as different users: "Agent crashed" error="failed to configure
		// plugin \"x509pop\": ... unable to load keypair: open
		// /run/spire/agent-certs/agent.key.pem: permission denied".
		ID: "agent-key-unreadable", Container: ContainerAgent,
		Match: regexp.MustCompile(`unable to load (keypair|certificate|private key).*permission denied`),
		Cause: "the agent cannot read the certificate or key gen-cert wrote: gen-cert writes the key 0600 as its own user, and the gen-cert and spire-agent containers run as different users",
		Fix:   "run gen-cert and spire-agent as the same runAsUser and runAsGroup (spirepod.yaml agent.uid and agent.gid; `spirepod init --force` renders both), `spirepod apply`, then delete the pod",
	},
	{
		// The agent's Workload API (and SDS) identifies each caller by the
		// PID of its socket peer; when the caller's process is in another
		// PID namespace the kernel reports PID 0 and SPIRE's peertracker
		// refuses the connection. Seen on the real node with the scaffold's
		// pod without shareProcessNamespace: level=warning msg="Connection
		// failed during accept" error="could not resolve caller information".
		ID: "agent-no-shared-pid", Container: ContainerAgent,
		Match: regexp.MustCompile(`Connection failed during accept.*(could not resolve caller information|could not open caller's proc directory)`),
		Cause: "the agent cannot see the process calling its Workload API (Envoy): the pod does not share its process namespace, so the unix workload attestor cannot find Envoy's PID and Envoy gets no SVID",
		Fix:   "set shareProcessNamespace: true in the StatefulSet's pod spec (`spirepod init --force` renders it), `spirepod apply`, then delete the pods",
	},
	{
		ID: "agent-attestation-failed", Container: ContainerAgent,
		Match: regexp.MustCompile(`failed to attest|attestation failed|Agent crashed`),
		Cause: "the agent could not attest to the SPIRE server",
		Fix:   "read the error in the agent log line above; check spireServer in spirepod.yaml and the agent certificate with `spirepod pki inspect`",
	},
	{
		ID: "agent-server-unreachable", Container: ContainerAgent,
		Match: regexp.MustCompile(`(?i)(connection refused|no such host|i/o timeout|context deadline exceeded).*`),
		Cause: "the agent cannot reach the SPIRE server",
		Fix:   "check spireServer in spirepod.yaml (host:port) and that the namespace may egress to it",
	},
	{
		ID: "envoy-sds-rejected", Container: ContainerEnvoy,
		Match: regexp.MustCompile(`(?i)(Secret|SDS).*(rejected|config stream.*closed)|StreamSecrets gRPC config stream to .* closed`),
		Cause: "Envoy cannot get its certificate from the agent over SDS (the agent socket is missing, or the agent has no SVID for Envoy)",
		Fix:   "check the spire-agent stage first; the agent socket must be shared through the spire-agent-socket emptyDir",
	},
	{
		ID: "envoy-upstream-tls", Container: ContainerEnvoy,
		Match: regexp.MustCompile(`CERTIFICATE_VERIFY_FAILED|TLS_error|SSLV3_ALERT|tls.*handshake`),
		Cause: upstreamTLSCause,
		Fix:   upstreamTLSFix,
	},
	{
		ID: "envoy-upstream-connect", Container: ContainerEnvoy,
		Match: regexp.MustCompile(`upstream connect error|no healthy upstream|connection failure`),
		Cause: "Envoy cannot connect to the upstream service",
		Fix:   "check the upstream cluster address in envoy.yaml and the network policy",
	},
	{
		ID: "curl-upstream-tls", Container: ContainerCurl,
		Match: regexp.MustCompile(`CERTIFICATE_VERIFY_FAILED|TLS_error`),
		Cause: "Envoy answered curl with an upstream TLS failure: " + upstreamTLSCause,
		Fix:   upstreamTLSFix,
	},
	{
		ID: "curl-upstream-error", Container: ContainerCurl,
		Match: regexp.MustCompile(`upstream connect error|no healthy upstream`),
		Cause: "Envoy answered curl with an upstream error",
		Fix:   "check Envoy's log and the upstream cluster in envoy.yaml",
	},
	{
		ID: "curl-envoy-unreachable", Container: ContainerCurl,
		Match: regexp.MustCompile(`curl: \((7|52|56|28)\)|request to envoy failed|Failed to connect to 127\.0\.0\.1`),
		Cause: "curl cannot reach Envoy on localhost (Envoy not started, crashed, or listening elsewhere)",
		Fix:   "check the envoy container's state and log",
	},
}

// The upstream mTLS failure, as Envoy's log and its 503 to curl show it.
// CERTIFICATE_VERIFY_FAILED is Envoy refusing the upstream's certificate
// (seen on the real node with a wrong upstream.spiffeID); other TLS errors
// include the upstream refusing Envoy's.
const (
	upstreamTLSCause = "the mTLS handshake between Envoy and the upstream failed; with CERTIFICATE_VERIFY_FAILED Envoy refused the upstream's certificate: its SPIFFE ID is not exactly upstream.spiffeID of spirepod.yaml (envoy.yaml's match_typed_subject_alt_names), or it is not signed by the trust domain's bundle"
	upstreamTLSFix   = "set upstream.spiffeID to the upstream's exact SPIFFE ID (`spirepod init --force --upstream-id ID`), `spirepod apply`, then delete the pods (Envoy reads its bootstrap at start); if the ID is right, check that Envoy has an SVID (spire-agent stage) and the upstream's trust domain"
)

// Finding is a pattern matched in a container log.
type Finding struct {
	Pattern Pattern
	Line    string
}

// MatchLog runs the table over a container's log lines and returns the
// finding of the last line that matches a pattern (the most recent error is
// the current one).
func MatchLog(container string, lines []string) (Finding, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		if p, ok := MatchPattern(container, lines[i]); ok {
			return Finding{Pattern: p, Line: strings.TrimSpace(lines[i])}, true
		}
	}
	return Finding{}, false
}

// MatchPattern returns the first pattern of container matching line.
func MatchPattern(container, line string) (Pattern, bool) {
	for _, p := range Patterns {
		if p.Container == container && p.Match.MatchString(line) {
			return p, true
		}
	}
	return Pattern{}, false
}
