package city

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	kjson "sigs.k8s.io/json"

	"github.com/spirepod/spirepod/internal/registration"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/printer"
	jsonparser "github.com/hashicorp/hcl/json/parser"
	"go.yaml.in/yaml/v3"
)

// SPIRE reads its configuration with HCL v1 (github.com/hashicorp/hcl
// v1.0.1-vault-7 in SPIRE 1.13), which accepts what HCL2 refuses: repeated
// attributes, quoted keys, several attributes on one line. Server configs are
// read here with the same library and the same steps as spire-server
// (cmd/spire-server/cli/run ParseFile, pkg/common/catalog
// PluginConfigsFromHCLNode, the x509pop plugin's buildConfig), so a file is
// judged as the server will read it.

// serverConfig is what a SPIRE server config says about its x509pop plugin.
type serverConfig struct {
	File string
	// Line is the agent_path_template's line, else the plugin's.
	Line int
	// Template is agent_path_template; empty means SPIRE's default
	// /{{ .PluginName }}/{{ .Fingerprint }}.
	Template string
	// Mode is external_pki (default) or spiffe.
	Mode string
	// DataFile is plugin_data_file when the plugin data lives elsewhere.
	DataFile string
}

// x509popNodeAttestor finds the NodeAttestor "x509pop" declaration in any form
// (`NodeAttestor "x509pop"`, quoted keys, JSON-ish objects).
var x509popNodeAttestor = regexp.MustCompile(`"?NodeAttestor"?\s*=?\s*\{?\s*"x509pop"`)

// mentionsX509pop is the cheap test before parsing.
func mentionsX509pop(data []byte) bool { return x509popNodeAttestor.Match(data) }

// mentionsServerConfig: a file that may hold a SPIRE server config or a
// spire-controller-manager config.
func mentionsServerConfig(data []byte) bool {
	return mentionsX509pop(data) || bytes.Contains(data, []byte(controllerConfigKind))
}

const controllerConfigKind = "ControllerManagerConfig"

// controllerConfig is what a spire-controller-manager config (its
// ControllerManagerConfig, api/v1alpha1 of v0.6.2) says about which
// entries it owns.
type controllerConfig struct {
	File           string
	Line           int
	ClassName      string `json:"className"`
	WatchClassless bool   `json:"watchClassless"`
	EntryIDPrefix  string `json:"entryIDPrefix"`
}

// readServerFile judges a file that may hold server or controller configs.
func (c *City) readServerFile(p string, data []byte) {
	if mentionsX509pop(data) {
		scs, errs := parseServerFile(p, data)
		c.servers = append(c.servers, scs...)
		for _, err := range errs {
			c.add(CodeServerUnparsable, sevW, p, lineIn(err), []string{fileKey(p)},
				"SPIRE server config does not parse as HCL (spire-server reads it with HCL v1): %v", err)
		}
	}
	if bytes.Contains(data, []byte(controllerConfigKind)) {
		c.controllers = append(c.controllers, parseControllerConfigs(p, data)...)
	}
}

// parseControllerConfigs finds ControllerManagerConfig documents in a YAML
// file, as the file itself or as a string value (a ConfigMap's
// controller-manager-config.yaml), decoded as the controller decodes its
// config (YAML converted to JSON, case-sensitive field names).
func parseControllerConfigs(p string, data []byte) []controllerConfig {
	var out []controllerConfig
	try := func(text []byte, offset int) {
		objs, err := registration.Objects(text)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Kind != controllerConfigKind || !strings.HasPrefix(o.APIVersion, "spire.spiffe.io/") {
				continue
			}
			var cc controllerConfig
			if kjson.UnmarshalCaseSensitivePreserveInts(o.JSON, &cc) != nil {
				continue
			}
			cc.File, cc.Line = p, o.Line+offset
			out = append(out, cc)
		}
	}
	try(data, 0)
	for _, s := range yamlStrings(data) {
		if strings.Contains(s.text, controllerConfigKind) {
			try([]byte(s.text), s.line-1)
		}
	}
	return out
}

// serverCandidate says whether p may be a SPIRE server config to read (the
// text is checked after reading).
func serverCandidate(p string, cfg Config, tp *teamPath) bool {
	if len(cfg.ServerConfigs) > 0 {
		for _, g := range cfg.ServerConfigs {
			if globMatch(g, p) {
				return true
			}
		}
		return false
	}
	if cfg.Light {
		return false
	}
	switch path.Ext(p) {
	case ".conf", ".hcl":
		return true
	case ".yaml", ".yml":
		if _, inTeam := tp.folderOf(p); inTeam {
			return false
		}
		return strings.Contains(p, "spire")
	}
	return false
}

// errNotServer means a file parses but is not a SPIRE server config (an
// agent config, or no x509pop plugin).
var errNotServer = errors.New("not a SPIRE server config with the x509pop plugin")

// parseServerFile reads the server configs in a file: the file itself (HCL),
// or, for YAML, every string value that holds a config (a ConfigMap's
// server.conf). line offsets place findings in the YAML file.
func parseServerFile(file string, data []byte) ([]serverConfig, []error) {
	switch path.Ext(file) {
	case ".yaml", ".yml":
		var out []serverConfig
		var errs []error
		for _, s := range yamlStrings(data) {
			if !mentionsX509pop([]byte(s.text)) {
				continue
			}
			sc, err := parseServerHCL(file, s.text)
			if errors.Is(err, errNotServer) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", s.line, err))
				continue
			}
			for i := range sc {
				sc[i].Line += s.line - 1
			}
			out = append(out, sc...)
		}
		return out, errs
	}
	sc, err := parseServerHCL(file, string(data))
	if errors.Is(err, errNotServer) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	return sc, nil
}

type yamlString struct {
	text string
	line int // line of the string's first character
}

// yamlStrings lists the multi-line string values of every YAML document.
func yamlStrings(data []byte) []yamlString {
	var out []yamlString
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return out
		}
		var walk func(n *yaml.Node)
		walk = func(n *yaml.Node) {
			if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "\n") {
				line := n.Line
				if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
					line++ // the text starts below the | or > indicator
				}
				out = append(out, yamlString{text: n.Value, line: line})
			}
			for _, c := range n.Content {
				walk(c)
			}
		}
		walk(&doc)
	}
}

// hclPluginConfig is SPIRE's pkg/common/catalog hclPluginConfig.
type hclPluginConfig struct {
	PluginCmd      string   `hcl:"plugin_cmd"`
	PluginData     ast.Node `hcl:"plugin_data"`
	PluginDataFile *string  `hcl:"plugin_data_file"`
	Enabled        *bool    `hcl:"enabled"`
}

// x509popConfig is the x509pop server plugin's Config (the fields judged).
type x509popConfig struct {
	Mode              string   `hcl:"mode"`
	CABundlePath      string   `hcl:"ca_bundle_path"`
	CABundlePaths     []string `hcl:"ca_bundle_paths"`
	AgentPathTemplate string   `hcl:"agent_path_template"`
}

// parseServerHCL reads one HCL text as spire-server does.
func parseServerHCL(file, text string) ([]serverConfig, error) {
	// hcl.Decode's parse, which spire-server uses: repeated keys allowed
	// (hcl.Parse refuses them), JSON when the text starts with {.
	var root *ast.File
	var err error
	if strings.HasPrefix(strings.TrimSpace(text), "{") {
		root, err = jsonparser.Parse([]byte(text))
	} else {
		root, err = hclparser.ParseDontErrorOnDuplicateKeys([]byte(text))
	}
	if err != nil {
		return nil, err
	}
	list, ok := root.Node.(*ast.ObjectList)
	if !ok || len(list.Filter("server").Items) == 0 {
		return nil, errNotServer // an agent config, or something else
	}
	var top struct {
		Plugins ast.Node `hcl:"plugins"`
	}
	if err := hcl.DecodeObject(&top, root.Node); err != nil {
		return nil, err
	}
	if top.Plugins == nil {
		return nil, errNotServer
	}
	plugins, ok := top.Plugins.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("expected plugins node type %T but got %T", plugins, top.Plugins)
	}
	var maps []map[string]map[string]hclPluginConfig
	if err := hcl.DecodeObject(&maps, plugins); err != nil {
		return nil, fmt.Errorf("failed to decode plugins config: %w", err)
	}
	var out []serverConfig
	for _, m := range maps { // the first declaration, as SPIRE's FindPluginConfig
		pc, ok := m["NodeAttestor"]["x509pop"]
		if !ok {
			continue
		}
		if (pc.Enabled != nil && !*pc.Enabled) || pc.PluginCmd != "" {
			break // disabled, or an external plugin of the same name
		}
		sc := serverConfig{File: file, Line: pluginLine(plugins)}
		if pc.PluginData != nil && pc.PluginDataFile != nil {
			return nil, errors.New(`NodeAttestor "x509pop": only one of [plugin_data, plugin_data_file] can be used`)
		}
		if pc.PluginDataFile != nil {
			sc.DataFile = *pc.PluginDataFile
			out = append(out, sc)
			break
		}
		if pc.PluginData != nil {
			var buf bytes.Buffer
			if err := printer.DefaultConfig.Fprint(&buf, pc.PluginData); err != nil {
				return nil, err
			}
			var xc x509popConfig
			if err := hcl.Decode(&xc, buf.String()); err != nil {
				return nil, fmt.Errorf(`NodeAttestor "x509pop": unable to decode configuration: %w`, err)
			}
			sc.Mode, sc.Template = xc.Mode, xc.AgentPathTemplate
			if l := keyLine(pc.PluginData, "agent_path_template"); l > 0 {
				sc.Line = l
			}
		}
		if sc.Mode == "" {
			sc.Mode = "external_pki"
		}
		out = append(out, sc)
		break
	}
	if len(out) == 0 {
		return nil, errNotServer
	}
	return out, nil
}

// pluginLine is the line of the first x509pop key under plugins.
func pluginLine(n ast.Node) int {
	line := 0
	ast.Walk(n, func(n ast.Node) (ast.Node, bool) {
		if it, ok := n.(*ast.ObjectItem); ok && line == 0 {
			for _, k := range it.Keys {
				if strings.Trim(k.Token.Text, `"`) == "x509pop" {
					line = k.Pos().Line
				}
			}
		}
		return n, line == 0
	})
	return line
}

// keyLine is the line of the last item named key directly in n (HCL v1
// decodes the last of repeated attributes into a string).
func keyLine(n ast.Node, key string) int {
	var items []*ast.ObjectItem
	switch t := n.(type) {
	case *ast.ObjectList:
		items = t.Items
	case *ast.ObjectType:
		items = t.List.Items
	}
	line := 0
	for _, it := range items {
		if len(it.Keys) == 1 && strings.Trim(it.Keys[0].Token.Text, `"`) == key {
			line = it.Keys[0].Pos().Line
		}
	}
	return line
}

// fingerprintInTemplate finds .Fingerprint used inside a template action.
var fingerprintInTemplate = regexp.MustCompile(`\{\{[^}]*\.Fingerprint\b[^}]*\}\}`)

// usesFingerprint says whether an agent path template names agents by
// their certificate's fingerprint (SPIRE's default does).
func (s serverConfig) usesFingerprint() bool {
	return s.Template == "" || fingerprintInTemplate.MatchString(s.Template)
}
