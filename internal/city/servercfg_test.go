package city

import (
	"strconv"
	"strings"
	"testing"
)

// TestServerHCL: server configs are read the way spire-server (HCL v1)
// reads them, including forms HCL2 refuses.
func TestServerHCL(t *testing.T) {
	cn := "/{{ .PluginName }}/{{ .Subject.CommonName }}"
	for _, c := range []struct {
		name, text string
		want       *serverConfig // nil: not a server config with x509pop
		fp         bool
		err        string
	}{
		{name: "default template", text: `server { trust_domain = "td" }
plugins {
  NodeAttestor "x509pop" {
    plugin_data {
      ca_bundle_path = "/a.pem"
    }
  }
}`, want: &serverConfig{Line: 3, Mode: "external_pki"}, fp: true},
		{name: "CN template", text: "server {}\nplugins {\n  NodeAttestor \"x509pop\" {\n    plugin_data {\n      agent_path_template = \"" + cn + "\"\n    }\n  }\n}\n",
			want: &serverConfig{Line: 5, Template: cn, Mode: "external_pki"}},
		{name: "repeated attribute: the last wins, as in SPIRE", text: "server {}\nplugins {\n  NodeAttestor \"x509pop\" {\n    plugin_data {\n      agent_path_template = \"/{{ .Fingerprint }}\"\n      agent_path_template = \"" + cn + "\"\n    }\n  }\n}\n",
			want: &serverConfig{Line: 6, Template: cn, Mode: "external_pki"}},
		{name: "quoted keys", text: "\"server\" {}\n\"plugins\" {\n  \"NodeAttestor\" \"x509pop\" {\n    \"plugin_data\" {\n      \"agent_path_template\" = \"" + cn + "\"\n    }\n  }\n}\n",
			want: &serverConfig{Line: 5, Template: cn, Mode: "external_pki"}},
		{name: "one line", text: "server {}\nplugins { NodeAttestor \"x509pop\" { plugin_data { ca_bundle_path = \"/a\" agent_path_template = \"" + cn + "\" } } }\n",
			want: &serverConfig{Line: 2, Template: cn, Mode: "external_pki"}},
		{name: "fingerprint with a prefix", text: "server {}\nplugins {\n NodeAttestor \"x509pop\" {\n plugin_data {\n agent_path_template = \"/x509pop/{{ .TrustDomain }}/{{ .Fingerprint }}\"\n }\n }\n}\n",
			want: &serverConfig{Line: 5, Template: "/x509pop/{{ .TrustDomain }}/{{ .Fingerprint }}", Mode: "external_pki"}, fp: true},
		{name: "spiffe mode", text: "server {}\nplugins {\n NodeAttestor \"x509pop\" {\n plugin_data {\n mode = \"spiffe\"\n }\n }\n}\n",
			want: &serverConfig{Line: 3, Mode: "spiffe"}, fp: true},
		{name: "plugin_data_file", text: "server {}\nplugins {\n NodeAttestor \"x509pop\" {\n plugin_data_file = \"/x.hcl\"\n }\n}\n",
			want: &serverConfig{Line: 3, DataFile: "/x.hcl"}, fp: true},
		{name: "disabled", text: "server {}\nplugins {\n NodeAttestor \"x509pop\" {\n enabled = false\n plugin_data { agent_path_template = \"" + cn + "\" }\n }\n}\n"},
		{name: "agent config", text: "agent {}\nplugins {\n NodeAttestor \"x509pop\" {\n plugin_data { private_key_path = \"/k\" }\n }\n}\n"},
		{name: "no x509pop", text: "server {}\nplugins {\n NodeAttestor \"k8s_psat\" {\n plugin_data {}\n }\n}\n"},
		{name: "both data forms", text: "server {}\nplugins {\n NodeAttestor \"x509pop\" {\n plugin_data {}\n plugin_data_file = \"/x\"\n }\n}\n", err: "only one of"},
		{name: "JSON", text: `{"server": {}, "plugins": {"NodeAttestor": {"x509pop": {"plugin_data": {"agent_path_template": "` + cn + `"}}}}}`,
			want: &serverConfig{Line: 0, Template: cn, Mode: "external_pki"}}, // the JSON parser keeps no positions
		{name: "broken", text: "server {}\nplugins {\n", err: "At 3:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, errs := parseServerFile("s.conf", []byte(c.text))
			if c.err != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), c.err) {
					t.Fatalf("errors %v, want %q", errs, c.err)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if c.want == nil {
				if len(got) != 0 {
					t.Fatalf("got %+v, want nothing", got)
				}
				return
			}
			c.want.File = "s.conf"
			if len(got) != 1 || got[0] != *c.want {
				t.Fatalf("got %+v, want %+v", got, *c.want)
			}
			if got[0].usesFingerprint() != c.fp {
				t.Errorf("usesFingerprint = %v", !c.fp)
			}
		})
	}
}

// TestPEMBlockLines: every block, its line, malformed ones too, the owner
// comment directly above.
func TestPEMBlockLines(t *testing.T) {
	data := []byte("# header\n" +
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" +
		"-----BEGIN BROKEN\nzzz\n" +
		"# spirepod: team=a namespace=b sha1=" + strings.Repeat("0", 40) + "\n" +
		"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	blocks, comments := pemBlocks("f", data)
	if len(comments) != 1 || comments[0].Line != 7 {
		t.Fatalf("comments %+v", comments)
	}
	var got []string
	for _, b := range blocks {
		got = append(got, b.Type+"@"+strconv.Itoa(b.Line))
		if b.Type == "PUBLIC KEY" && (b.above == nil || b.above.Line != 7) {
			t.Errorf("comment above the public key not linked")
		}
	}
	if want := "CERTIFICATE@2 @5 PUBLIC KEY@8"; strings.Join(got, " ") != want {
		t.Errorf("blocks %q, want %q", strings.Join(got, " "), want)
	}
}
