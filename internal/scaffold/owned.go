package scaffold

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"

	"go.yaml.in/yaml/v3"
)

// genCertData reads the data of spirepod's init-gen-cert ConfigMap from its
// own template (gen_cert.sh).
func genCertData(base fs.FS) (*yaml.Node, error) {
	data, err := fs.ReadFile(base, "init-gen-cert-configmap.yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	docs, err := decodeDocs(data)
	if err != nil {
		return nil, fmt.Errorf("init-gen-cert-configmap.yaml: %w", err)
	}
	for _, d := range docs {
		root := d.Content[0]
		if scalar(root, "kind") == "ConfigMap" && scalar(lookup(root, "metadata"), "name") == GenCertConfigMap {
			return lookup(root, "data"), nil
		}
	}
	return nil, nil
}

// agentCertificates renders one Certificate per pod from the file's first
// Certificate: its name and Secret, the agent CN, the lifetime and the issuer.
func (rw *rewriter) agentCertificates(docs []*yaml.Node) ([]*yaml.Node, error) {
	var proto *yaml.Node
	for _, d := range docs {
		if scalar(d.Content[0], "kind") == "Certificate" {
			proto = d
			break
		}
	}
	if proto == nil {
		return nil, errors.New("no Certificate to render per pod")
	}
	p, ref := rw.p, rw.p.Issuer()
	var out []*yaml.Node
	for i, pod := range p.PodNames() {
		d := cloneNode(proto)
		root := d.Content[0]
		if i > 0 && len(root.Content) > 0 { // the explanation once, on the first
			d.HeadComment, root.HeadComment, root.Content[0].HeadComment = "", "", ""
		}
		md := lookup(root, "metadata")
		setScalar(md, "name", p.CertificateName(pod))
		setScalar(md, "namespace", p.Namespace)
		spec := lookup(root, "spec")
		setScalar(spec, "secretName", p.CertificateName(pod))
		setScalar(spec, "commonName", p.AgentCN(pod))
		setScalar(spec, "duration", p.Agent.CertDuration)
		setScalar(spec, "renewBefore", p.Agent.CertRenewBefore)
		ir := ensureMap(spec, "issuerRef")
		setScalar(ir, "group", "cert-manager.io")
		setScalar(ir, "kind", ref.Kind)
		setScalar(ir, "name", ref.Name)
		out = append(out, d)
	}
	return out, nil
}

func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, k := range n.Content {
		c.Content[i] = cloneNode(k)
	}
	return &c
}

// overlayFS is primary, with the files named in only taken from fallback
// when primary lacks them.
type overlayFS struct {
	primary, fallback fs.FS
	only              []string
}

func (o overlayFS) Open(name string) (fs.File, error) {
	f, err := o.primary.Open(name)
	if errors.Is(err, fs.ErrNotExist) && slices.Contains(o.only, name) {
		return o.fallback.Open(name)
	}
	return f, err
}

// ReadDir lists primary's entries plus the owned files it lacks.
func (o overlayFS) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := fs.ReadDir(o.primary, name)
	if err != nil {
		return nil, err
	}
	if name != "." {
		return ents, nil
	}
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name()] = true
	}
	for _, f := range o.only {
		if have[f] {
			continue
		}
		if st, err := fs.Stat(o.fallback, f); err == nil {
			ents = append(ents, fs.FileInfoToDirEntry(st))
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, nil
}
