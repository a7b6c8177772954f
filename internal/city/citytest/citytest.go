// Package citytest generates synthetic city repositories for tests and
// benchmarks of package city: N teams, each with a CA on the trust list and
// a registration folder in one of the formats spirepod writes, a SPIRE
// server config, and optionally the whole scaffold in every team folder (the
// size of a real city). The generated city passes `city check` clean; tests
// break it one rule at a time.
package citytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/city"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
	"github.com/spirepod/spirepod/internal/scaffold"
	"github.com/spirepod/spirepod/scaffoldfs"
)

// Formats a team's folder can use. FormatMixed registers the node aliases
// as entry-json and the workloads as SpiffeID objects (k8s selectors only:
// the shapes the k8s-workload-registrar turns into working entries).
const (
	FormatEntryJSON          = project.FormatEntryJSON
	FormatClusterStaticEntry = project.FormatClusterStaticEntry
	FormatMixed              = "mixed"
)

// AllFormats is the default rotation.
var AllFormats = []string{FormatEntryJSON, FormatClusterStaticEntry, FormatMixed}

// Defaults of a generated city.
const (
	TrustDomain = "spire.cityos-dev.woven-planet.tech"
	TeamPath    = "ns/{namespace}/spire-envoy-integration"
	BundlePath  = "ns/spire/server/dev/x509pop/agent-ca-bundle.pem"
	TrustDir    = "ns/spire/server/dev/x509pop/trust"
	ServerFile  = "ns/spire/server/dev/spire-server-configmap.yaml"
	ClassName   = "spire-system-spire"
)

// Options shape a generated city.
type Options struct {
	// Teams is how many teams (default 3); Pods per team (default 3).
	Teams, Pods int
	// Formats rotate over the teams (default AllFormats).
	Formats []string
	// Directory puts the trust list in directory mode (<team>.crt.pem files
	// listed in a kustomization) instead of one bundle with owner comments.
	Directory bool
	// GuideNaming uses the guide's alias and CN form instead of the
	// namespaced one; StatefulSet is the pods' StatefulSet (default
	// project.DefaultStatefulSet).
	GuideNaming bool
	StatefulSet string
	// Scaffold copies the scaffold's manifests into every team folder.
	Scaffold bool
	// Now is when the CAs are made (default time.Now()); they are valid a year.
	Now time.Time
}

// Team is one generated team.
type Team struct {
	Name, Namespace, Folder, Format string
	CA                              *x509.Certificate
	SHA1                            string
	// Files are the team's registration files.
	Files []string
	Proj  *project.Project
}

// City is a generated city.
type City struct {
	Tree   city.MapTree
	Config city.Config
	Teams  []*Team
}

// Generate makes a city.
func Generate(o Options) *City {
	if o.Teams <= 0 {
		o.Teams = 3
	}
	if o.Pods <= 0 {
		o.Pods = 3
	}
	if len(o.Formats) == 0 {
		o.Formats = AllFormats
	}
	if o.StatefulSet == "" {
		o.StatefulSet = project.DefaultStatefulSet
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	c := &City{Tree: city.MapTree{}, Config: city.Config{
		TrustDomain: TrustDomain, TeamPath: TeamPath,
		TrustList: project.TrustList{Mode: project.TrustListBundle, Path: BundlePath}, Now: o.Now,
	}}
	if o.Directory {
		c.Config.TrustList = project.TrustList{Mode: project.TrustListDirectory, Path: TrustDir}
	}
	var bundle strings.Builder
	var listed []string
	for i := 0; i < o.Teams; i++ {
		name := fmt.Sprintf("team%04d", i)
		ns := "ns-" + name
		if o.Directory {
			ns = name // directory mode knows a CA's team by its file name only
		}
		t := c.AddTeam(name, ns, o.Formats[i%len(o.Formats)], o)
		if o.Scaffold {
			c.addScaffold(t)
		}
		if o.Directory {
			c.Tree[path.Join(TrustDir, name+".crt.pem")] = pki.EncodeCertificate(t.CA)
			listed = append(listed, name+".crt.pem")
		} else {
			bundle.WriteString(city.OwnerComment(name, ns, t.SHA1) + "\n")
			bundle.Write(pki.EncodeCertificate(t.CA))
		}
	}
	if o.Directory {
		c.Tree[path.Join(TrustDir, "kustomization.yaml")] = TrustKustomization(listed)
	} else {
		c.Tree[BundlePath] = []byte(bundle.String())
	}
	c.Tree[ServerFile] = ServerConfigMap("")
	return c
}

// AddTeam registers one more team's folder (not its CA: the caller puts it
// on the trust list, or not).
func (c *City) AddTeam(name, ns, format string, o Options) *Team {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	ca := NewCA(name+" x509pop agent CA", o.Now, nil)
	naming := project.NamingNamespaced
	if o.GuideNaming {
		naming = project.NamingGuide
	}
	pods := o.Pods
	if pods <= 0 {
		pods = 3
	}
	sts := o.StatefulSet
	if sts == "" {
		sts = project.DefaultStatefulSet
	}
	p := &project.Project{Team: name, Namespace: ns, StatefulSet: sts, Replicas: pods, Naming: naming,
		ServiceAccount: "httpbin-client", TrustDomain: c.Config.TrustDomain,
		Registration: project.Registration{EnvoyUID: 101, ClassName: ClassName}}
	t := &Team{Name: name, Namespace: ns, Format: format, CA: ca, SHA1: pki.SHA1Fingerprint(ca), Proj: p,
		Folder: strings.NewReplacer("{namespace}", ns, "{team}", name).Replace(c.Config.TeamPath)}
	es := registration.Entries(p, ca)
	switch format {
	case FormatMixed:
		var aliases []registration.Entry
		for _, e := range es {
			if e.Node {
				aliases = append(aliases, e)
			}
		}
		c.put(t, registration.File(FormatEntryJSON), render(p, aliases, FormatEntryJSON))
		c.put(t, registration.File(registration.FormatSpiffeID), spiffeIDWorkloads(p))
	default:
		c.put(t, registration.File(format), render(p, es, format))
		if format == FormatClusterStaticEntry { // listed, as pr spiffe-id lists it
			c.Tree[path.Join(t.Folder, "kustomization.yaml")] = []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + registration.File(format) + "\n")
		}
	}
	c.Teams = append(c.Teams, t)
	return t
}

func (c *City) put(t *Team, name string, data []byte) {
	p := path.Join(t.Folder, name)
	c.Tree[p] = data
	t.Files = append(t.Files, p)
}

func render(p *project.Project, es []registration.Entry, format string) []byte {
	b, err := registration.Render(p, es, format)
	if err != nil {
		panic(err) // the generator's own input
	}
	return b
}

// spiffeIDWorkloads are SpiffeID objects for the team's workloads, one per
// pod, parented to the pod's alias, selected by namespace and service
// account (k8s selectors: what the registrar keeps).
func spiffeIDWorkloads(p *project.Project) []byte {
	var b strings.Builder
	for i, pod := range p.PodNames() {
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, `apiVersion: spiffeid.spiffe.io/v1beta1
kind: SpiffeID
metadata:
  name: %s-envoy
  namespace: %s
spec:
  spiffeId: %s
  parentId: %s
  selector:
    namespace: %s
    serviceAccount: %s
`, pod, p.Namespace, p.WorkloadSpiffeID(), p.NodeAliasID(pod), p.Namespace, p.ServiceAccount)
	}
	return []byte(b.String())
}

// NewCA makes a team CA as `spirepod pki gen` does (ECDSA P-256, CA:TRUE,
// digitalSignature+keyCertSign+cRLSign, a year from now-1h); edit changes
// the template before signing (to make a bad one).
func NewCA(cn string, now time.Time, edit func(*x509.Certificate)) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	serial, err := pki.RandomSerial(rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

// NewSerial is a random serial for hand-made certificates.
func NewSerial() *big.Int {
	s, err := pki.RandomSerial(rand.Reader)
	if err != nil {
		panic(err)
	}
	return s
}

// TrustKustomization is a directory-mode trust list's kustomization.
func TrustKustomization(files []string) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator:\n- name: spire-x509pop-trust-list\n  files:\n")
	for _, f := range files {
		fmt.Fprintf(&b, "  - %s\n", f)
	}
	return []byte(b.String())
}

// ServerConf is a SPIRE server config with the x509pop node attestor;
// template "" leaves agent_path_template out (SPIRE's fingerprint default).
func ServerConf(template string) string {
	tl := ""
	if template != "" {
		tl = fmt.Sprintf("\n      agent_path_template = %q", template)
	}
	return fmt.Sprintf(`server {
  bind_address = "0.0.0.0"
  bind_port = "8081"
  trust_domain = %q
  data_dir = "/run/spire/data"
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "/run/spire/data/datastore.sqlite3"
    }
  }

  NodeAttestor "x509pop" {
    plugin_data {
      ca_bundle_path = "/run/spire/x509pop/agent-ca-bundle.pem"%s
    }
  }

  KeyManager "disk" {
    plugin_data {
      keys_path = "/run/spire/data/keys.json"
    }
  }
}
`, TrustDomain, tl)
}

// ServerConfigMap is the server config as the city holds it: a ConfigMap.
func ServerConfigMap(template string) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: spire-server\n  namespace: spire\ndata:\n  server.conf: |\n")
	for _, l := range strings.Split(strings.TrimRight(ServerConf(template), "\n"), "\n") {
		if l == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("    " + l + "\n")
	}
	return []byte(b.String())
}

// addScaffold puts the scaffold `spirepod init` renders for the team into
// its folder (spirepod.yaml included, the CA key never), and lists the
// registration file in the kustomization as `pr spiffe-id` does for the
// formats a kustomize build applies.
func (c *City) addScaffold(t *Team) {
	p := *t.Proj
	p.Environment = "dev"
	p.IssuerScope = project.IssuerNamespaced
	p.SpireServer = "spire-server.example:8081"
	p.Paths = project.DefaultPaths
	p.ApplyDefaults()
	files, err := scaffold.Render(scaffold.Options{Source: scaffoldfs.Scaffold(), Project: &p})
	if err != nil {
		panic(err) // the generator's own input
	}
	for name, b := range files {
		if name == p.Paths.CAKey {
			continue // git-ignored: the key never reaches the city
		}
		c.Tree[path.Join(t.Folder, name)] = b
	}
	if t.Format == FormatEntryJSON {
		return
	}
	k := path.Join(t.Folder, "kustomization.yaml")
	c.Tree[k] = append(files["kustomization.yaml"], []byte("  - "+registration.File(registration.FormatSpiffeID)+"\n")...)
}

// Write puts the tree's files under dir.
func Write(t city.MapTree, dir string) error {
	for p, b := range t {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Git runs the git CLI in dir with a fixed identity (tests only: the
// product reads git with go-git, and the CLI is the independent judge).
func Git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=City Bot", "GIT_AUTHOR_EMAIL=bot@city.example",
		"GIT_COMMITTER_NAME=City Bot", "GIT_COMMITTER_EMAIL=bot@city.example", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// WriteGit writes the tree into a new git repository at dir (branch main)
// and commits it with message.
func WriteGit(t city.MapTree, dir, message string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := Git(dir, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	if _, err := Git(dir, "config", "gc.auto", "0"); err != nil { // no background gc racing the caller
		return err
	}
	return Commit(t, dir, message)
}

// Commit writes the tree's files into the repository at dir and commits
// every change with message.
func Commit(t city.MapTree, dir, message string) error {
	if err := Write(t, dir); err != nil {
		return err
	}
	if _, err := Git(dir, "add", "-A"); err != nil {
		return err
	}
	_, err := Git(dir, "commit", "-q", "--allow-empty", "-m", message)
	return err
}

// Paths lists a tree's paths, sorted.
func Paths(t city.MapTree) []string {
	out := make([]string, 0, len(t))
	for p := range t {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
