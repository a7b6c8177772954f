package city

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// Config says how to read a city: the environment profile's values (the CLI
// fills them from `--env` and its flags).
type Config struct {
	// TrustDomain every ID must be in; empty accepts any (and scopes are then
	// judged by path only).
	TrustDomain string
	// TeamPath is the team folder pattern, e.g. ns/{namespace}/spire-envoy-integration
	// ({namespace} and {team} placeholders, each a whole or part of one path segment).
	TeamPath string
	// TrustList is the x509pop trust list: one bundle file or a directory of
	// <team>.crt.pem files listed in its kustomization.yaml.
	TrustList project.TrustList
	// ServerConfigs are glob patterns (path.Match syntax per segment, plus
	// ** for any number of directories) of SPIRE server configs to judge.
	// Empty: every *.conf and *.hcl whose text mentions NodeAttestor
	// "x509pop", plus YAML outside team folders whose path contains "spire"
	// and whose text does (a ConfigMap carrying server.conf).
	ServerConfigs []string
	// ExpiryDays warns about trust-list CAs that expire within that many days
	// (default 30).
	ExpiryDays int
	// Classless says spire-controller-manager watches ClusterStaticEntry
	// objects without className.
	Classless bool
	// Now is the time certificates are judged at (default time.Now()).
	Now time.Time
	// AllowFederation lists the trust domains entries may federate with
	// (SPD117); empty allows none.
	AllowFederation []string
	// MaxCAsPerTeam caps the trust-list CAs of one owner (SPD314); 0 means
	// DefaultMaxCAsPerTeam.
	MaxCAsPerTeam int
	// BuildCache is a directory where team-folder builds are kept by
	// content, so an unchanged folder is not built again; "" keeps them in
	// memory only.
	BuildCache string
	// CacheSalt names the program that writes BuildCache (the CLI passes
	// its executable's identity): a judgement kept by another build of
	// spirepod, whose rules may differ, is never used.
	CacheSalt string
	// Light reads only files named spiffe-ids.yaml/spiffe-ids.json as
	// registrations and no server config unless ServerConfigs names one:
	// few reads, for a city read over an API. The default (false) is the
	// thorough local reading.
	Light bool
}

// DefaultExpiryDays is --expiry-days' default.
const DefaultExpiryDays = 30

// DefaultMaxCAsPerTeam is --max-cas-per-team's default: a rotation needs
// two CAs of one team at once; one more leaves room for an emergency
// rotation during a planned one.
const DefaultMaxCAsPerTeam = 3

func (c Config) withDefaults() Config {
	if c.ExpiryDays == 0 {
		c.ExpiryDays = DefaultExpiryDays
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if c.MaxCAsPerTeam == 0 {
		c.MaxCAsPerTeam = DefaultMaxCAsPerTeam
	}
	c.TrustList.Path = strings.Trim(path.Clean("/"+c.TrustList.Path), "/")
	if c.TrustList.Mode == "" {
		c.TrustList.Mode = project.TrustListBundle
	}
	return c
}

// prepare validates the Config, fills its defaults and compiles TeamPath.
func (c Config) prepare() (Config, *teamPath, error) {
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	c = c.withDefaults()
	tp, err := compileTeamPath(c.TeamPath)
	return c, tp, err
}

// Validate reports a Config that cannot be used, naming the field.
func (c Config) Validate() error {
	if _, err := compileTeamPath(c.TeamPath); err != nil {
		return err
	}
	switch c.TrustList.Mode {
	case "", project.TrustListBundle, project.TrustListDirectory:
	default:
		return fmt.Errorf("trust list mode %q must be %s or %s", c.TrustList.Mode, project.TrustListBundle, project.TrustListDirectory)
	}
	if strings.Trim(c.TrustList.Path, "/. ") == "" {
		return fmt.Errorf("trust list path is empty")
	}
	for _, g := range c.ServerConfigs {
		if _, err := path.Match(strings.ReplaceAll(g, "**", "x"), ""); err != nil {
			return fmt.Errorf("server config pattern %q: %w", g, err)
		}
	}
	if c.MaxCAsPerTeam < 0 {
		return fmt.Errorf("max CAs per team must not be negative, got %d", c.MaxCAsPerTeam)
	}
	if c.ExpiryDays < 0 {
		return fmt.Errorf("expiry days must not be negative, got %d", c.ExpiryDays)
	}
	return nil
}

// Folder is a team folder: the directory TeamPath names for one team.
type Folder struct {
	Path      string `json:"path"`
	Namespace string `json:"namespace,omitempty"`
	Team      string `json:"team,omitempty"`
}

// teamPath matches paths against a TeamPath pattern.
type teamPath struct {
	segs []segment
}

type segment struct {
	literal string
	re      *regexp.Regexp // nil for a literal segment or a whole placeholder
	names   []string
	whole   string // a segment that is exactly one placeholder: its name
}

var placeholder = regexp.MustCompile(`\{(namespace|team)\}`)

func compileTeamPath(pattern string) (*teamPath, error) {
	pattern = strings.Trim(pattern, "/")
	if pattern == "" {
		return nil, fmt.Errorf("team path is empty")
	}
	if !placeholder.MatchString(pattern) {
		return nil, fmt.Errorf("team path %q has neither {namespace} nor {team}: it cannot tell teams apart", pattern)
	}
	tp := &teamPath{}
	for _, s := range strings.Split(pattern, "/") {
		if s == "" || s == "." || s == ".." {
			return nil, fmt.Errorf("team path %q has an empty, . or .. segment", pattern)
		}
		if !placeholder.MatchString(s) {
			tp.segs = append(tp.segs, segment{literal: s})
			continue
		}
		if m := placeholder.FindStringSubmatch(s); m[0] == s {
			tp.segs = append(tp.segs, segment{whole: m[1]})
			continue
		}
		var re strings.Builder
		var names []string
		re.WriteString("^")
		last := 0
		for _, m := range placeholder.FindAllStringSubmatchIndex(s, -1) {
			re.WriteString(regexp.QuoteMeta(s[last:m[0]]))
			re.WriteString(`([^/]+?)`)
			names = append(names, s[m[2]:m[3]])
			last = m[1]
		}
		re.WriteString(regexp.QuoteMeta(s[last:]))
		re.WriteString("$")
		tp.segs = append(tp.segs, segment{re: regexp.MustCompile(re.String()), names: names})
	}
	return tp, nil
}

// folderOf is the team folder file p is under, if any.
func (tp *teamPath) folderOf(p string) (Folder, bool) {
	var f Folder
	rest := p
	for _, s := range tp.segs {
		dir, after, ok := strings.Cut(rest, "/")
		if !ok { // the file name is never part of the folder
			return Folder{}, false
		}
		rest = after
		var names, values []string
		switch {
		case s.whole != "":
			names, values = []string{s.whole}, []string{dir}
		case s.re == nil:
			if dir != s.literal {
				return Folder{}, false
			}
			continue
		default:
			m := s.re.FindStringSubmatch(dir)
			if m == nil {
				return Folder{}, false
			}
			names, values = s.names, m[1:]
		}
		for j, name := range names {
			v := values[j]
			switch name {
			case "namespace":
				if f.Namespace != "" && f.Namespace != v {
					return Folder{}, false
				}
				f.Namespace = v
			case "team":
				if f.Team != "" && f.Team != v {
					return Folder{}, false
				}
				f.Team = v
			}
		}
	}
	f.Path = strings.TrimSuffix(p[:len(p)-len(rest)], "/")
	return f, true
}

// registrationNames are the files `pr spiffe-id` writes, whatever the format.
var registrationNames = map[string]bool{
	registration.File(registration.FormatEntryJSON): true,
	registration.File(registration.FormatSpiffeID):  true,
}

// globMatch matches a slash path against a pattern where ** stands for any
// number of directories (zero included) and other segments use path.Match.
func globMatch(pattern, p string) bool {
	return globSegs(strings.Split(strings.Trim(pattern, "/"), "/"), strings.Split(p, "/"))
}

func globSegs(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if globSegs(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], segs[0]); err != nil || !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}
