// Package project reads, validates and writes spirepod.yaml, the project file
// that `spirepod init` writes into a scaffold and every later command finds by
// searching from the current directory upward, the way git finds .git.
package project

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FileName is the project file's name inside a scaffold.
const FileName = "spirepod.yaml"

// APIVersion is the only project file version this build reads and writes.
const APIVersion = "spirepod/v1alpha1"

// Kind is the project file's kind.
const Kind = "Project"

// AgentCNPrefix is the fixed part of every agent certificate's common name and
// of every node alias: spire-agent-x509pop-<pod>.
const AgentCNPrefix = "spire-agent-x509pop-"

// StateDir is spirepod's local state in a scaffold (never committed, never
// copied from a template).
const StateDir = ".spirepod"

// MaxCNBytes is the longest common name cert-manager accepts (RFC 5280 ub-common-name).
const MaxCNBytes = 64

// Project is the content of spirepod.yaml.
type Project struct {
	APIVersion  string `yaml:"apiVersion" json:"apiVersion"`
	Kind        string `yaml:"kind" json:"kind"`
	Team        string `yaml:"team" json:"team"`
	Namespace   string `yaml:"namespace" json:"namespace"`
	Environment string `yaml:"environment" json:"environment"`
	StatefulSet string `yaml:"statefulSet" json:"statefulSet"`
	Replicas    int    `yaml:"replicas" json:"replicas"`
	// Naming is how agent common names and node aliases are formed:
	// NamingNamespaced (default) or NamingGuide; empty in files written
	// before spirepod knew about many teams (the guide's shared names).
	Naming string `yaml:"naming,omitempty" json:"naming,omitempty"`
	// IssuerScope is where agent certificates are issued: IssuerNamespaced
	// (default) or IssuerCluster; empty as for Naming.
	IssuerScope    string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	ServiceAccount string `yaml:"serviceAccount" json:"serviceAccount"`
	TrustDomain    string `yaml:"trustDomain" json:"trustDomain"`
	SpireServer    string `yaml:"spireServer" json:"spireServer"`
	// SpireVersion is the environment's (oldest) SPIRE server version, from
	// the profile: the agent must not be newer.
	SpireVersion string `yaml:"spireVersion,omitempty" json:"spireVersion,omitempty"`
	// Images, Agent and Upstream shape the pod (spirepod init renders them).
	Images       Images       `yaml:"images" json:"images"`
	Agent        Agent        `yaml:"agent" json:"agent"`
	Upstream     Upstream     `yaml:"upstream" json:"upstream"`
	City         City         `yaml:"city" json:"city"`
	Registration Registration `yaml:"registration" json:"registration"`
	Paths        Paths        `yaml:"paths" json:"paths"`
	// ProtectedContexts are glob patterns of kube contexts that `apply` only
	// changes with --yes.
	ProtectedContexts []string `yaml:"protectedContexts,omitempty" json:"protectedContexts,omitempty"`

	// Dir is the directory holding the project file; not serialised.
	Dir string `yaml:"-" json:"-"`
}

// DefaultBaseBranch is the city repository's base branch when neither the
// profile nor spirepod.yaml names one.
const DefaultBaseBranch = "main"

// BaseBranch is the city's base branch: city.baseBranch, else
// DefaultBaseBranch.
func (p *Project) BaseBranch() string {
	if p.City.BaseBranch != "" {
		return p.City.BaseBranch
	}
	return DefaultBaseBranch
}

// City describes the city monorepo that receives the pull requests.
type City struct {
	// Repo is owner/name.
	Repo       string `yaml:"repo" json:"repo"`
	BaseBranch string `yaml:"baseBranch" json:"baseBranch"`
	// Host is the GitHub host: github.com or an Enterprise Server host name.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// TeamPath is the team's manifest folder inside the repository.
	TeamPath  string    `yaml:"teamPath" json:"teamPath"`
	TrustList TrustList `yaml:"trustList" json:"trustList"`
}

// Trust list modes.
const (
	TrustListBundle    = "bundle"
	TrustListDirectory = "directory"
)

// TrustList is where the SPIRE server's x509pop trust list lives in the city repo.
type TrustList struct {
	// Mode is "bundle" (one PEM file, CAs appended) or "directory" (one
	// <team>.crt.pem per team, listed in that directory's kustomization).
	Mode string `yaml:"mode" json:"mode"`
	// Path is the bundle file (mode bundle) or the directory (mode directory).
	Path string `yaml:"path" json:"path"`
}

// Registration formats.
const (
	FormatSpiffeID           = "spiffeid"
	FormatClusterStaticEntry = "cluster-static-entry"
	FormatEntryJSON          = "entry-json"
)

// Registration holds how SPIFFE IDs are registered (step 5).
type Registration struct {
	Format string `yaml:"format" json:"format"`
	// SpiffeID is the workload (Envoy) identity; empty means
	// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
	SpiffeID string `yaml:"spiffeID,omitempty" json:"spiffeID,omitempty"`
	// EnvoyUID is the uid Envoy runs as in the template; the workload entry selects unix:uid:<EnvoyUID>.
	EnvoyUID int `yaml:"envoyUID" json:"envoyUID"`
	// EnvoyGID is Envoy's group; the workload entry also selects unix:gid:<EnvoyGID>.
	EnvoyGID int `yaml:"envoyGID" json:"envoyGID"`
	// ClassName is the spire-controller-manager class for cluster-static-entry.
	ClassName string `yaml:"className,omitempty" json:"className,omitempty"`
	// WatchClassless states that the environment's spire-controller-manager
	// runs with watchClassless: true, so a ClusterStaticEntry needs no className.
	WatchClassless bool `yaml:"watchClassless,omitempty" json:"watchClassless,omitempty"`
}

// Paths are relative to the project directory.
type Paths struct {
	CACert string `yaml:"caCert" json:"caCert"`
	CAKey  string `yaml:"caKey" json:"caKey"`
}

// DefaultPaths are the guide's names for the team CA.
var DefaultPaths = Paths{
	CACert: "certs/secret/agent-x509pop.crt.pem",
	CAKey:  "certs/secret/agent-x509pop.key.pem",
}

// WorkloadSpiffeID is the identity the curl container's log must show.
func (p *Project) WorkloadSpiffeID() string {
	if p.Registration.SpiffeID != "" {
		return p.Registration.SpiffeID
	}
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", p.TrustDomain, p.Namespace, p.ServiceAccount)
}

// Path resolves a project-relative path.
func (p *Project) Path(rel string) string {
	if filepath.IsAbs(rel) {
		return rel
	}
	return filepath.Join(p.Dir, filepath.FromSlash(rel))
}

// FieldError is a validation error about one field of the project file or one flag.
type FieldError struct {
	Field string // the YAML key or the flag, e.g. "namespace" or "--namespace"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Msg }

// CheckNamespace checks a namespace as Kubernetes does (a DNS-1123 label).
func CheckNamespace(ns string) error {
	if ns == "" {
		return errors.New("must not be empty")
	}
	return notLabel("namespace", ns)
}

// CheckTeam checks a team name: a DNS-1123 label, as it names branches,
// files and (by default) the CA's subject.
func CheckTeam(team string) error {
	if team == "" {
		return errors.New("must not be empty")
	}
	return notLabel("team name", team)
}

// CheckServiceAccount checks a service account name (a DNS-1123 subdomain).
func CheckServiceAccount(sa string) error {
	if sa == "" {
		return errors.New("must not be empty")
	}
	return notSubdomain("service account name", sa)
}

// MaxReplicas bounds the pods of one scaffold. The gen-cert Role names two
// objects per pod in resourceNames: at 5,000 pods it is about 0.5 MB, a
// third of etcd's 1.5 MiB object limit (the API server's request limit is
// 3 MiB), and every command's cost grows linearly up to it (bench/scale.sh).
const MaxReplicas = 5000

// CheckStatefulSet checks the StatefulSet name and the replica count.
// Whether every pod's agent common name fits in 64 bytes depends on the
// naming and the namespace: Validate checks it.
func CheckStatefulSet(name string, replicas int) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if err := notLabel("StatefulSet name", name); err != nil {
		return err
	}
	if replicas < 1 || replicas > MaxReplicas {
		return fmt.Errorf("replicas must be between 1 and %d, got %d", MaxReplicas, replicas)
	}
	return nil
}

// Validate checks the whole project file. Field names are YAML keys.
func (p *Project) Validate() error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, &FieldError{Field: field, Msg: err.Error()})
		}
	}
	if p.APIVersion != APIVersion {
		add("apiVersion", fmt.Errorf("is %q; this spirepod reads %q", p.APIVersion, APIVersion))
	}
	if p.Kind != Kind {
		add("kind", fmt.Errorf("is %q; want %q", p.Kind, Kind))
	}
	if strings.TrimSpace(p.Team) == "" {
		add("team", errors.New("must not be empty"))
	} else {
		add("team", CheckTeam(p.Team))
	}
	add("namespace", CheckNamespace(p.Namespace))
	add("statefulSet", CheckStatefulSet(p.StatefulSet, p.Replicas))
	switch p.Naming {
	case "", NamingNamespaced:
	case NamingGuide:
		if p.StatefulSet == DefaultStatefulSet {
			add("naming", fmt.Errorf("guide needs a StatefulSet name no other team of the SPIRE server uses; %q is every team's default (pick one with `spirepod init --name`)", DefaultStatefulSet))
		}
	default:
		add("naming", fmt.Errorf("%q must be %q or %q", p.Naming, NamingNamespaced, NamingGuide))
	}
	switch p.IssuerScope {
	case "", IssuerNamespaced, IssuerCluster:
	default:
		add("issuer", fmt.Errorf("%q must be %q or %q", p.IssuerScope, IssuerNamespaced, IssuerCluster))
	}
	if p.Namespace != "" && p.StatefulSet != "" && p.Replicas > 0 {
		if err := CheckAgentCN(p.AgentCN(p.PodName(p.Replicas - 1))); err != nil {
			add("statefulSet", fmt.Errorf("%v: use a shorter StatefulSet name (--name) or namespace", err))
		}
	}
	add("serviceAccount", notSubdomain("service account name", p.ServiceAccount))
	if p.TrustDomain == "" {
		add("trustDomain", errors.New("must not be empty"))
	}
	if p.SpireServer == "" {
		add("spireServer", errors.New("must not be empty"))
	}
	if p.City.Repo != "" && strings.Count(p.City.Repo, "/") != 1 {
		add("city.repo", fmt.Errorf("%q must be owner/name", p.City.Repo))
	}
	switch p.City.TrustList.Mode {
	case TrustListBundle, TrustListDirectory:
	default:
		add("city.trustList.mode", fmt.Errorf("%q must be %q or %q", p.City.TrustList.Mode, TrustListBundle, TrustListDirectory))
	}
	switch p.Registration.Format {
	case FormatSpiffeID, FormatClusterStaticEntry, FormatEntryJSON:
	default:
		add("registration.format", fmt.Errorf("%q must be one of %s, %s, %s", p.Registration.Format,
			FormatSpiffeID, FormatClusterStaticEntry, FormatEntryJSON))
	}
	p.validateWorkload(add)
	if p.Paths.CACert == "" || p.Paths.CAKey == "" {
		add("paths", errors.New("caCert and caKey must be set"))
	}
	return errors.Join(errs...)
}

// NotFoundError says which directories were searched for spirepod.yaml.
type NotFoundError struct {
	Start string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no %s found in %s or any parent directory", FileName, e.Start)
}

// Find searches start and its parents for spirepod.yaml and loads it.
func Find(start string) (*Project, error) {
	abs, err := filepath.Abs(start)
	if err != nil {
		return nil, err
	}
	for dir := abs; ; {
		path := filepath.Join(dir, FileName)
		if _, err := os.Stat(path); err == nil {
			return Load(path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, &NotFoundError{Start: abs}
		}
		dir = parent
	}
}

// Load reads and validates one project file.
func Load(path string) (*Project, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.Dir = filepath.Dir(path)
	return p, nil
}

// Parse decodes a project file strictly: unknown keys are errors naming their line.
func Parse(data []byte) (*Project, error) {
	var p Project
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		if e := explainYAML(data, reflect.TypeOf(p)); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("parse: %w", cleanYAMLError(err))
	}
	p.ApplyDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// cleanYAMLError turns "field x not found in type project.Project" into words
// a user understands, keeping the line number.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if i := strings.Index(m, " not found in type "); i >= 0 && strings.Contains(m, "field ") {
			m = strings.Replace(m[:i], "field ", "unknown key ", 1)
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Marshal renders the project file with a header comment.
func (p *Project) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# spirepod project file: written by `spirepod init`, read by every later command.\n")
	buf.WriteString("# Edit with care; `spirepod init --force` rewrites it from flags.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CityTeamDir is the team's folder in the city repository (spirepod.yaml's
// city.teamPath, with any {namespace} and {team} expanded).
func (p *Project) CityTeamDir() string {
	return ExpandTeamPath(p.City.TeamPath, p.Team, p.Namespace)
}

// TeamPathPattern is the team-folder pattern the city's rules use for this
// project: prof's when it expands to the project's folder, otherwise the
// project's folder with its namespace as {namespace}. It is the one reverse
// of ExpandTeamPath.
func (p *Project) TeamPathPattern(prof *Profile) string {
	dir := p.CityTeamDir()
	if prof != nil && prof.TeamPathFor(p.Team, p.Namespace) == dir {
		return prof.TeamPath
	}
	parts := strings.Split(dir, "/")
	for i, s := range parts {
		if s == p.Namespace {
			parts[i] = "{namespace}"
		}
	}
	return path.Join(parts...)
}
