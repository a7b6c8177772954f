package project

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultSpireVersion is the SPIRE version the built-in profiles' servers
// are assumed to run: agents must not be newer than the oldest server.
const DefaultSpireVersion = "1.13.3"

// Images are the pod's container images, each pinned by tag, optionally with
// a digest (repo:tag@sha256:…).
type Images struct {
	// GenCert needs a POSIX shell and kubectl (gen_cert.sh runs in it).
	GenCert    string `yaml:"genCert" json:"genCert"`
	SpireAgent string `yaml:"spireAgent" json:"spireAgent"`
	// Envoy needs bash for its readiness probe (the official images have it).
	Envoy string `yaml:"envoy" json:"envoy"`
	Curl  string `yaml:"curl" json:"curl"`
}

// DefaultImages are images that exist and hold what each container runs:
// alpine/k8s has a shell and kubectl (registry.k8s.io/kubectl and
// rancher/kubectl have no shell; bitnami removed its versioned kubectl tags
// in 2025); the agent's tag is the SPIRE server's version.
func DefaultImages(spireVersion string) Images {
	if spireVersion == "" {
		spireVersion = DefaultSpireVersion
	}
	return Images{
		GenCert:    "docker.io/alpine/k8s:1.31.12",
		SpireAgent: "ghcr.io/spiffe/spire-agent:" + strings.TrimPrefix(spireVersion, "v"),
		Envoy:      "docker.io/envoyproxy/envoy:v1.32.3",
		Curl:       "docker.io/curlimages/curl:8.11.1",
	}
}

// merge fills empty fields from def.
func (im Images) merge(def Images) Images {
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&im.GenCert, def.GenCert)
	set(&im.SpireAgent, def.SpireAgent)
	set(&im.Envoy, def.Envoy)
	set(&im.Curl, def.Curl)
	return im
}

// List is every image with the container that runs it.
func (im Images) List() map[string]string {
	return map[string]string{"gen-cert": im.GenCert, "spire-agent": im.SpireAgent, "envoy": im.Envoy, "curl": im.Curl}
}

// Tag is an image reference's tag ("" when it has none).
func Tag(image string) string {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	if t, ok := ref.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

// Upstream is the remote service Envoy calls over mTLS for the workload.
type Upstream struct {
	Host string `yaml:"host" json:"host"`
	Port int    `yaml:"port" json:"port"`
	// SNI is the TLS server name Envoy sends (default: Host).
	SNI string `yaml:"sni,omitempty" json:"sni,omitempty"`
	// SpiffeID is the upstream's identity; Envoy accepts exactly this SAN.
	SpiffeID string `yaml:"spiffeID" json:"spiffeID"`
}

// DefaultUpstream is the guide's httpbin in spire-sample.
func DefaultUpstream(trustDomain string) Upstream {
	return Upstream{Host: "httpbin.spire-sample.svc.cluster.local", Port: 8443,
		SpiffeID: "spiffe://" + trustDomain + "/ns/spire-sample/sa/httpbin"}
}

// ServerName is the SNI Envoy sends.
func (u Upstream) ServerName() string {
	if u.SNI != "" {
		return u.SNI
	}
	return u.Host
}

// Agent are the SPIRE agent's settings in the pod.
type Agent struct {
	// UID and GID run the spire-agent and gen-cert containers: gen-cert
	// writes the agent's key 0600, so both must be the same user.
	UID int `yaml:"uid" json:"uid"`
	GID int `yaml:"gid" json:"gid"`
	// K8sAttestor adds SPIRE's k8s workload attestor to the agent, with the
	// ClusterRole (nodes/proxy) and the token it needs. Off: the entries
	// select unix:uid and unix:gid, which need neither.
	K8sAttestor bool `yaml:"k8sAttestor,omitempty" json:"k8sAttestor,omitempty"`
	// CertDuration and CertRenewBefore are the agent Certificate's; gen-cert
	// follows cert-manager's renewals into the running pod.
	CertDuration    string `yaml:"certDuration" json:"certDuration"`
	CertRenewBefore string `yaml:"certRenewBefore" json:"certRenewBefore"`
}

// DefaultAgent is a non-root agent with a one-year certificate renewed 30 days ahead.
func DefaultAgent() Agent {
	return Agent{UID: 1000, GID: 1000, CertDuration: "8760h", CertRenewBefore: "720h"}
}

// Default workload users.
const (
	DefaultEnvoyUID = 101 // Envoy's own image user
	DefaultEnvoyGID = 101
	CurlUID         = 100 // curlimages/curl's curl_user, made numeric for runAsNonRoot
)

// ApplyDefaults fills what project files written before these
// settings existed lack.
func (p *Project) ApplyDefaults() {
	p.Images = p.Images.merge(DefaultImages(""))
	if p.Upstream.Host == "" {
		p.Upstream = DefaultUpstream(p.TrustDomain)
	}
	def := DefaultAgent()
	if p.Agent.UID == 0 {
		p.Agent.UID, p.Agent.GID = def.UID, def.GID
	}
	if p.Agent.CertDuration == "" {
		p.Agent.CertDuration = def.CertDuration
	}
	if p.Agent.CertRenewBefore == "" {
		p.Agent.CertRenewBefore = def.CertRenewBefore
	}
	if p.Registration.EnvoyUID == 0 {
		p.Registration.EnvoyUID = DefaultEnvoyUID
	}
	if p.Registration.EnvoyGID == 0 {
		p.Registration.EnvoyGID = DefaultEnvoyGID
	}
}

// validateWorkload checks images, users, the upstream and the agent certificate.
func (p *Project) validateWorkload(add func(string, error)) {
	for field, img := range map[string]string{"images.genCert": p.Images.GenCert, "images.spireAgent": p.Images.SpireAgent,
		"images.envoy": p.Images.Envoy, "images.curl": p.Images.Curl} {
		add(field, CheckImage(img))
	}
	for field, id := range map[string]int{"agent.uid": p.Agent.UID, "agent.gid": p.Agent.GID,
		"registration.envoyUID": p.Registration.EnvoyUID, "registration.envoyGID": p.Registration.EnvoyGID} {
		if id <= 0 {
			add(field, fmt.Errorf("must be a non-root id (> 0), got %d", id))
		}
	}
	if p.Agent.UID == p.Registration.EnvoyUID {
		add("agent.uid", fmt.Errorf("%d is also Envoy's uid: the workload entry selects Envoy by uid, so the agent must run as another", p.Agent.UID))
	}
	d, err1 := time.ParseDuration(p.Agent.CertDuration)
	r, err2 := time.ParseDuration(p.Agent.CertRenewBefore)
	switch {
	case err1 != nil:
		add("agent.certDuration", err1)
	case err2 != nil:
		add("agent.certRenewBefore", err2)
	case d < time.Hour:
		add("agent.certDuration", fmt.Errorf("%s is under cert-manager's minimum of 1h", d))
	case r <= 0 || r >= d:
		add("agent.certRenewBefore", fmt.Errorf("%s must be positive and shorter than certDuration %s", r, d))
	}
	if err := notSubdomain("host name", p.Upstream.Host); err != nil && validation.IsValidIP(nil, p.Upstream.Host) != nil {
		add("upstream.host", fmt.Errorf("neither a DNS name nor an IP: %v", err))
	}
	if p.Upstream.Port < 1 || p.Upstream.Port > 65535 {
		add("upstream.port", fmt.Errorf("must be 1-65535, got %d", p.Upstream.Port))
	}
	if _, err := spiffeid.FromString(p.Upstream.SpiffeID); err != nil {
		add("upstream.spiffeID", fmt.Errorf("%q: %v", p.Upstream.SpiffeID, err))
	}
}

// CheckImage checks an image reference: parseable, and pinned by a tag or
// digest (never implicitly :latest).
func CheckImage(img string) error {
	if img == "" {
		return errors.New("must not be empty")
	}
	ref, err := reference.ParseNormalizedNamed(img)
	if err != nil {
		return fmt.Errorf("%q is not an image reference: %v", img, err)
	}
	_, tagged := ref.(reference.Tagged)
	_, digested := ref.(reference.Digested)
	if !tagged && !digested {
		return fmt.Errorf("%q has no tag: pin it (repo:tag, optionally @sha256:…)", img)
	}
	if t, ok := ref.(reference.Tagged); ok && t.Tag() == "latest" && !digested {
		return fmt.Errorf("%q is :latest: pin a version", img)
	}
	return nil
}

// AgentVersionSkew compares the agent image's tag with the SPIRE server
// version: ok false when the agent is newer than the server (SPIRE supports
// agents up to one minor version older than the server, never newer), or
// older by more than one minor. msg says what was compared; unknown when
// either version cannot be read.
func (p *Project) AgentVersionSkew() (ok, known bool, msg string) {
	agent, server := Tag(p.Images.SpireAgent), p.SpireVersion
	am, aok := minorOf(agent)
	sm, sok := minorOf(server)
	if !aok || !sok {
		return true, false, fmt.Sprintf("agent image tag %q, server version %q", agent, server)
	}
	switch {
	case am > sm:
		return false, true, fmt.Sprintf("agent %s is newer than the SPIRE server %s: agents must not be newer than the server", agent, server)
	case am < sm-1:
		return false, true, fmt.Sprintf("agent %s is more than one minor version behind the SPIRE server %s", agent, server)
	}
	return true, true, fmt.Sprintf("agent %s, server %s", agent, server)
}

// minorOf reads "1.13.3" or "v1.13.3" as 1*1000+13.
func minorOf(v string) (int, bool) {
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &major, &minor); err != nil {
		return 0, false
	}
	return major*1000 + minor, true
}
