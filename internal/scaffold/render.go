// Package scaffold renders the same-pod SPIRE manifests for one team and
// writes them safely: everything is rendered in memory first, compared with
// what is on disk, and only then written, one file atomically at a time.
//
// The source tree is a concrete copy of the city repository's
// spire-envoy-integration folder (embedded, or read from a city checkout),
// written for the namespace spire-envoy-integration-ns. Rendering rewrites it
// structurally through the YAML node model: object fields are set by kind and
// name, and the template's namespace, trust domain, server and SPIFFE ID are
// replaced inside every string value (scripts, agent and Envoy config). The
// cert-manager namespace of certs/secret is never touched.
package scaffold

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/certmanager"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// The values the template is written with.
const (
	TemplateNamespace      = "spire-envoy-integration-ns"
	TemplateName           = "spire-envoy-integration"
	TemplateServiceAccount = "httpbin-client"
	TemplateTrustDomain    = "spire.cityos-dev.woven-planet.tech"
	TemplateServerHost     = "spire-server.cityos-dev.woven-planet.tech"
	TemplateServerPort     = "8081"
	TemplateEnvironment    = "dev"

	// BundleConfigMap and BundleKey hold the SPIRE server CA.
	BundleConfigMap = "spire-bundle"
	BundleKey       = "bundle.crt"
)

// Issuer files: the guide's ClusterIssuer file, and the namespaced Issuer's.
const (
	ClusterIssuerFile = "certs/spire-cluster-issuer.yaml"
	IssuerFile        = "certs/spire-issuer.yaml"
	// GenCertConfigMap holds gen_cert.sh and the Certificate template.
	GenCertConfigMap = "init-gen-cert"
	// GenCertRole is gen-cert's Role.
	GenCertRole = "spire-agent-gen-cert"
	// AgentConfigMap holds the agent's configuration.
	AgentConfigMap = "spire-agent"
	AgentConfKey   = "agent.conf"
	// EnvoyConfigMap holds Envoy's bootstrap; its upstream cluster is named
	// EnvoyUpstreamCluster.
	EnvoyConfigMap       = "envoy"
	EnvoyConfKey         = "envoy.yaml"
	EnvoyUpstreamCluster = "upstream_mtls"
	// GenCertScriptKey is gen-cert's script in it.
	GenCertScriptKey = "gen_cert.sh"
	// AgentCertificatesFile holds one Certificate per pod.
	AgentCertificatesFile = "agent-certificates.yaml"
)

// BundleFile is the bundle ConfigMap's file name for an environment.
func BundleFile(env string) string { return "spire-bundle-configmap-" + env + ".yaml" }

// Options describe one rendering.
type Options struct {
	// Source is the template tree.
	Source fs.FS
	// Project holds the team's values; its Marshal output becomes spirepod.yaml.
	Project *project.Project
	// ServerCA is the SPIRE server CA bundle (PEM) for the bundle ConfigMap; nil keeps the source's.
	ServerCA []byte
	// Base is spirepod's own template (the embedded one): what spirepod owns
	// (gen-cert's script, the agent Certificates) comes from it when Source is
	// a city checkout's folder. nil means Source.
	Base fs.FS
}

// ownedFiles are the scaffold files spirepod owns: taken from Base when the
// source lacks them, and listed in the root kustomization.
var ownedFiles = []string{AgentCertificatesFile}

// Render returns every file of the scaffold, keyed by slash path.
func Render(opts Options) (map[string][]byte, error) {
	p := opts.Project
	if p == nil {
		return nil, errors.New("scaffold: no project values")
	}
	rw, err := newRewriter(p)
	if err != nil {
		return nil, err
	}
	base := opts.Base
	if base == nil {
		base = opts.Source
	}
	if rw.genCertData, err = genCertData(base); err != nil {
		return nil, err
	}
	source := overlayFS{primary: opts.Source, fallback: base, only: ownedFiles}
	out := map[string][]byte{}
	err = fs.WalkDir(source, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name == project.StateDir {
				return fs.SkipDir // a template's local state is never copied
			}
			return nil
		}
		if name == project.FileName {
			return nil // the team's own project file is written from values
		}
		data, err := fs.ReadFile(source, name)
		if err != nil {
			return err
		}
		target := rw.fileName(name)
		switch {
		case isYAML(name):
			data, err = rw.rewriteYAML(name, data, opts.ServerCA)
			if err != nil {
				return fmt.Errorf("render %s: %w", name, err)
			}
		case utf8.Valid(data) && !bytes.ContainsRune(data, 0):
			// Scripts and config files used by generators: same string rewrite.
			data = []byte(rw.text(string(data)))
		}
		out[target] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := out["kustomization.yaml"]; !ok {
		return nil, errors.New("scaffold: source has no kustomization.yaml at its root")
	}
	pf, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	out[project.FileName] = pf
	out[".gitignore"] = withIgnoreRules(out[".gitignore"], p)
	for _, f := range ownedFiles {
		k, err := addResourceOnce(out["kustomization.yaml"], f)
		if err != nil {
			return nil, err
		}
		out["kustomization.yaml"] = k
	}
	if p.Agent.K8sAttestor {
		out[K8sAttestorRBACFile] = k8sAttestorRBAC(p)
		k, err := addResourceOnce(out["kustomization.yaml"], K8sAttestorRBACFile)
		if err != nil {
			return nil, err
		}
		out["kustomization.yaml"] = k
	}
	// Empty placeholders for the team CA, so certs/ builds from day one;
	// `spirepod pki gen` replaces them, and init never touches them again.
	for _, rel := range []string{p.Paths.CACert, p.Paths.CAKey} {
		if !path.IsAbs(rel) && !strings.HasPrefix(path.Clean(rel), "..") {
			out[path.Clean(rel)] = []byte{}
		}
	}
	return out, nil
}

// IgnoreRules are the .gitignore lines every scaffold has, whatever its
// template holds: the team CA's key (and any key), the temp files of an
// interrupted atomic write, and spirepod's local state.
func IgnoreRules(p *project.Project) []string {
	rules := []string{"*.key.pem", "*.key", ".*.tmp-*", "/" + project.StateDir + "/"}
	if k := path.Clean(p.Paths.CAKey); !path.IsAbs(k) && !strings.HasPrefix(k, "..") {
		rules = append(rules, "/"+k)
	}
	return rules
}

// withIgnoreRules appends to a template's .gitignore the rules it lacks.
func withIgnoreRules(data []byte, p *project.Project) []byte {
	have := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	var missing []string
	for _, r := range IgnoreRules(p) {
		if !have[r] {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return data
	}
	out := append([]byte(nil), data...)
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	out = append(out, "# spirepod: private keys, interrupted writes and local state never go into git.\n"...)
	return append(out, strings.Join(missing, "\n")+"\n"...)
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// rewriter holds the replacements for one project.
type rewriter struct {
	p *project.Project
	// genCertData is spirepod's init-gen-cert ConfigMap data.
	genCertData *yaml.Node
	strings     *strings.Replacer
	portExpr    *regexp.Regexp
	port        string
}

func newRewriter(p *project.Project) (*rewriter, error) {
	host, port, err := splitServer(p.SpireServer)
	if err != nil {
		return nil, err
	}
	oldID := fmt.Sprintf("/ns/%s/sa/%s", TemplateNamespace, TemplateServiceAccount)
	newID := fmt.Sprintf("/ns/%s/sa/%s", p.Namespace, p.ServiceAccount)
	oldSpiffe := "spiffe://" + TemplateTrustDomain + oldID
	pairs := []string{}
	if p.Registration.SpiffeID != "" {
		pairs = append(pairs, oldSpiffe, p.Registration.SpiffeID)
	}
	pairs = append(pairs,
		oldID, newID,
		TemplateNamespace, p.Namespace,
		TemplateServerHost, host,
		TemplateTrustDomain, p.TrustDomain,
	)
	return &rewriter{
		p:        p,
		strings:  strings.NewReplacer(pairs...),
		portExpr: regexp.MustCompile(`(server_port\s*=\s*")` + regexp.QuoteMeta(TemplateServerPort) + `(")`),
		port:     port,
	}, nil
}

func splitServer(addr string) (host, port string, err error) {
	i := strings.LastIndex(addr, ":")
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("SPIRE server %q must be host:port", addr)
	}
	host, port = addr[:i], addr[i+1:]
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("SPIRE server %q: port must be 1-65535", addr)
	}
	return host, port, nil
}

// fileName renames the environment's bundle ConfigMap file, and the issuer's
// file after the issuer's kind.
func (rw *rewriter) fileName(name string) string {
	if path.Base(name) == BundleFile(TemplateEnvironment) && rw.p.Environment != TemplateEnvironment {
		return path.Join(path.Dir(name), BundleFile(rw.p.Environment))
	}
	if name == ClusterIssuerFile || name == IssuerFile {
		return rw.issuerFile()
	}
	return name
}

func (rw *rewriter) issuerFile() string {
	if rw.p.Issuer().Cluster() {
		return ClusterIssuerFile
	}
	return IssuerFile
}

func (rw *rewriter) text(s string) string {
	s = rw.strings.Replace(s)
	return rw.portExpr.ReplaceAllString(s, "${1}"+rw.port+"${2}")
}

// rewriteYAML decodes every document as nodes, rewrites it and encodes it again.
func (rw *rewriter) rewriteYAML(name string, data []byte, serverCA []byte) ([]byte, error) {
	docs, err := decodeDocs(data)
	if err != nil {
		return nil, err
	}
	if name == AgentCertificatesFile {
		// One Certificate per pod, rewritten like any other document; the
		// file is parsed and encoded once, whatever the number of pods.
		if docs, err = rw.agentCertificates(docs); err != nil {
			return nil, err
		}
	}
	for _, doc := range docs {
		root := doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		rw.rewriteStrings(doc)
		if root.Kind != yaml.MappingNode {
			continue
		}
		kind := scalar(root, "kind")
		switch {
		case kind == "Kustomization":
			rw.kustomization(name, root)
		case kind == certmanager.KindIssuer || kind == certmanager.KindClusterIssuer:
			rw.issuer(root)
		case kind == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == GenCertConfigMap && rw.genCertData != nil:
			// gen-cert's script is spirepod's, whatever the template holds.
			data := cloneNode(rw.genCertData)
			rw.rewriteStrings(data)
			setNode(root, "data", data)
		case kind == "StatefulSet":
			if err := rw.statefulSet(root); err != nil {
				return nil, err
			}
		case kind == "Role" && scalar(lookup(root, "metadata"), "name") == GenCertRole:
			rw.role(root)
		case kind == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == AgentConfigMap:
			if v := lookup(lookup(root, "data"), AgentConfKey); v != nil {
				v.Value = rw.agentConf(v.Value)
			}
		case kind == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == EnvoyConfigMap:
			if err := rw.envoyConf(root); err != nil {
				return nil, err
			}
		case kind == "ServiceAccount" && scalar(lookup(root, "metadata"), "name") == TemplateServiceAccount:
			setScalar(lookup(root, "metadata"), "name", rw.p.ServiceAccount)
		case kind == "RoleBinding":
			if subs := lookup(root, "subjects"); subs != nil {
				for _, s := range subs.Content {
					if scalar(s, "kind") == "ServiceAccount" && scalar(s, "name") == TemplateServiceAccount {
						setScalar(s, "name", rw.p.ServiceAccount)
					}
				}
			}
		case kind == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == BundleConfigMap && serverCA != nil:
			if err := SetBundle(root, serverCA); err != nil {
				return nil, err
			}
		}
	}
	return encodeDocs(docs)
}

// rewriteStrings replaces the template's values inside every string value
// and comment. Mapping keys are left alone.
func (rw *rewriter) rewriteStrings(n *yaml.Node) {
	n.HeadComment = rw.text(n.HeadComment)
	n.LineComment = rw.text(n.LineComment)
	n.FootComment = rw.text(n.FootComment)
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "" || n.Tag == "!!str" {
			n.Value = rw.text(n.Value)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			k.HeadComment = rw.text(k.HeadComment)
			k.LineComment = rw.text(k.LineComment)
			rw.rewriteStrings(n.Content[i+1])
		}
	default:
		for _, c := range n.Content {
			rw.rewriteStrings(c)
		}
	}
}

func (rw *rewriter) kustomization(name string, root *yaml.Node) {
	ref := rw.p.Issuer()
	// certs/secret: the CA Secret, where the issuer reads it.
	if gens := lookup(root, "secretGenerator"); gens != nil && path.Dir(name) == "certs/secret" {
		setScalar(root, "namespace", ref.SecretNamespace)
		for _, g := range gens.Content {
			if n := scalar(g, "name"); n == project.GuideCASecretName || strings.HasPrefix(n, project.GuideCASecretName+"-") {
				setScalar(g, "name", ref.SecretName)
			}
		}
	}
	res := lookup(root, "resources")
	if res == nil {
		return
	}
	for _, r := range res.Content {
		if r.Kind != yaml.ScalarNode {
			continue
		}
		if rw.p.Environment != TemplateEnvironment && path.Base(r.Value) == BundleFile(TemplateEnvironment) {
			r.Value = path.Join(path.Dir(r.Value), BundleFile(rw.p.Environment))
		}
		if p := path.Join(path.Dir(name), r.Value); p == ClusterIssuerFile || p == IssuerFile {
			r.Value = path.Base(rw.issuerFile())
		}
	}
}

// issuer makes the template's issuer the project's: kind, name, namespace
// (only an Issuer has one) and the CA Secret it reads.
func (rw *rewriter) issuer(root *yaml.Node) {
	ref := rw.p.Issuer()
	setScalar(root, "kind", ref.Kind)
	md := lookup(root, "metadata")
	setScalar(md, "name", ref.Name)
	if ref.Cluster() {
		deleteKey(md, "namespace")
	} else {
		setScalar(md, "namespace", ref.Namespace)
	}
	if ca := lookup(lookup(root, "spec"), "ca"); ca != nil {
		setScalar(ca, "secretName", ref.SecretName)
	}
}

func (rw *rewriter) statefulSet(root *yaml.Node) error {
	md := lookup(root, "metadata")
	if scalar(md, "name") != TemplateName {
		return nil
	}
	// The StatefulSet's name also names its labels and governing service.
	replaceExact(root, TemplateName, rw.p.StatefulSet)
	spec := lookup(root, "spec")
	if spec == nil {
		return nil
	}
	setInt(spec, "replicas", rw.p.Replicas)
	podSpec := lookup(lookup(spec, "template"), "spec")
	if sa := lookup(podSpec, "serviceAccountName"); sa != nil && sa.Value == TemplateServiceAccount {
		sa.Value = rw.p.ServiceAccount
	}
	return rw.podSpec(podSpec)
}

// envoyConf points Envoy's upstream cluster at the project's upstream: its
// address and port, the SNI it sends and the one SPIFFE ID it accepts.
func (rw *rewriter) envoyConf(cm *yaml.Node) error {
	v := lookup(lookup(cm, "data"), EnvoyConfKey)
	if v == nil {
		return nil
	}
	docs, err := decodeDocs([]byte(v.Value))
	if err != nil || len(docs) != 1 {
		return fmt.Errorf("%s in ConfigMap %s: %v", EnvoyConfKey, EnvoyConfigMap, err)
	}
	u := rw.p.Upstream
	clusters := lookup(lookup(docs[0].Content[0], "static_resources"), "clusters")
	c := namedItem(clusters, EnvoyUpstreamCluster)
	if c == nil {
		return fmt.Errorf("%s: no cluster %s", EnvoyConfKey, EnvoyUpstreamCluster)
	}
	for _, ep := range lookup(lookup(c, "load_assignment"), "endpoints").Content {
		for _, lb := range lookup(ep, "lb_endpoints").Content {
			sa := lookup(lookup(lookup(lb, "endpoint"), "address"), "socket_address")
			setScalar(sa, "address", u.Host)
			setInt(sa, "port_value", u.Port)
		}
	}
	tc := lookup(lookup(c, "transport_socket"), "typed_config")
	setScalar(tc, "sni", u.ServerName())
	dvc := lookup(lookup(lookup(tc, "common_tls_context"), "combined_validation_context"), "default_validation_context")
	if dvc != nil {
		sans := mustNode(fmt.Sprintf("[{san_type: URI, matcher: {exact: %q}}]", u.SpiffeID))
		setNode(dvc, "match_typed_subject_alt_names", sans)
	}
	out, err := encodeDocs(docs)
	if err != nil {
		return err
	}
	v.Value = string(out)
	return nil
}

// replaceExact replaces scalar values equal to old.
func replaceExact(n *yaml.Node, old, repl string) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == old {
			n.Value = repl
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			replaceExact(n.Content[i], old, repl)
		}
	default:
		for _, c := range n.Content {
			replaceExact(c, old, repl)
		}
	}
}

// SetBundle puts a validated CA bundle into a spire-bundle ConfigMap node.
func SetBundle(cm *yaml.Node, pemData []byte) error {
	if _, err := ParseServerCA(pemData); err != nil {
		return err
	}
	data := lookup(cm, "data")
	if data == nil {
		data = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		cm.Content = append(cm.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "data"}, data)
	}
	val := string(bytes.TrimSpace(pemData)) + "\n"
	if v := lookup(data, BundleKey); v != nil {
		v.Value, v.Style, v.Tag = val, yaml.LiteralStyle, "!!str"
		return nil
	}
	data.Content = append(data.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Value: BundleKey},
		&yaml.Node{Kind: yaml.ScalarNode, Value: val, Style: yaml.LiteralStyle, Tag: "!!str"})
	return nil
}

// ParseServerCA parses a SPIRE server CA bundle: one or more PEM
// certificates, each a CA.
func ParseServerCA(pemData []byte) ([]*x509.Certificate, error) {
	if pki.ContainsPrivateKey(pemData) {
		return nil, errors.New("holds a private key; the bundle takes only the server's CA certificate")
	}
	certs, err := pki.ParseCertificates(pemData)
	if err != nil {
		return nil, err
	}
	for i, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA (basicConstraints CA:TRUE missing)", i+1, c.Subject)
		}
	}
	return certs, nil
}

// BundleCerts returns the CA certificates in a rendered bundle ConfigMap file.
func BundleCerts(fileData []byte) ([]*x509.Certificate, error) {
	docs, err := decodeDocs(fileData)
	if err != nil {
		return nil, err
	}
	for _, doc := range docs {
		root := doc.Content[0]
		if scalar(root, "kind") == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == BundleConfigMap {
			v := scalar(lookup(root, "data"), BundleKey)
			if strings.TrimSpace(v) == "" {
				return nil, nil
			}
			return ParseServerCA([]byte(v))
		}
	}
	return nil, fmt.Errorf("no ConfigMap %q found", BundleConfigMap)
}

// UpdateBundleFile returns fileData with bundle.crt of the spire-bundle ConfigMap set to pemData.
func UpdateBundleFile(fileData, pemData []byte) ([]byte, error) {
	docs, err := decodeDocs(fileData)
	if err != nil {
		return nil, err
	}
	found := false
	for _, doc := range docs {
		root := doc.Content[0]
		if scalar(root, "kind") == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == BundleConfigMap {
			if err := SetBundle(root, pemData); err != nil {
				return nil, err
			}
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("no ConfigMap %q found", BundleConfigMap)
	}
	return encodeDocs(docs)
}

func decodeDocs(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, &n)
	}
	return docs, nil
}

func encodeDocs(docs []*yaml.Node) ([]byte, error) {
	// One encoder per document: yaml.v3's encoder keeps every event it
	// emitted until it is closed, so one encoder for a file of 5,000
	// Certificates held and re-copied hundreds of thousands of events.
	var buf bytes.Buffer
	for i, d := range docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(d); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// lookup returns the value node of key in a mapping node (nil-safe).
func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(m *yaml.Node, key string) string {
	if v := lookup(m, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

func deleteKey(m *yaml.Node, key string) {
	if m == nil || m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func setScalar(m *yaml.Node, key, val string) {
	if v := lookup(m, key); v != nil {
		v.Value = val
		return
	}
	if m != nil && m.Kind == yaml.MappingNode {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: val})
	}
}

// SortedPaths returns the keys of a rendered tree in order.
func SortedPaths(files map[string][]byte) []string {
	out := make([]string, 0, len(files))
	for k := range files {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// addResourceOnce lists file under resources: of a rendered kustomization.
func addResourceOnce(data []byte, file string) ([]byte, error) {
	docs, err := decodeDocs(data)
	if err != nil || len(docs) != 1 {
		return nil, fmt.Errorf("kustomization.yaml: %v", err)
	}
	res := ensureSeq(docs[0].Content[0], "resources")
	for _, r := range res.Content {
		if r.Value == file {
			return data, nil
		}
	}
	res.Content = append(res.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: file})
	return encodeDocs(docs)
}
