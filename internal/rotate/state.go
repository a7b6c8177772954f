// Package rotate replaces a team CA without a failed SVID fetch: `spirepod
// pki rotate`. A rotation is a list of phases, each a list of steps; every
// step is idempotent and its completion is recorded in the scaffold
// (spirepod.rotation.yaml next to spirepod.yaml, written atomically), so a
// rotation stopped anywhere — by a merge still pending, an interrupt or a
// crash — resumes from the file on any machine that has the scaffold (and,
// until phase 3 is done, the new CA's key).
//
// Normal rotation (an overlap: both CAs are trusted while agents move):
//
//  1. prepare: a new CA next to the current one, same profile.
//  2. trust both: pull requests putting the new CA on the trust list next
//     to the old one and one more node alias per pod pinned to it; merged;
//     the SPIRE server trusts the new CA (a probe leaf attests).
//  3. switch issuance: the scaffold's CA files and the issuer's CA Secret
//     become the new CA; every pod's agent certificate is re-issued and its
//     agent re-attests with it (in place, or by restarting the pod).
//  4. retire: pull requests removing the old aliases, then the old CA;
//     the server refuses the old CA; the old key is deleted.
//
// An emergency rotation (the old key is compromised) has no overlap: the
// issuer switches at once, the pull requests add the new CA and remove the
// old one (and its aliases) together, and every pod loses its identity from
// the moment those merge until its agent attests with a new leaf.
//
// The package never prints, exits or reads flags: Run takes options with
// its dependencies (pull requests, the cluster, the probe, a prompt) and
// returns a Report the CLI renders.
package rotate

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/project"
)

// FileName is the rotation state file, next to spirepod.yaml. It holds no
// secret (fingerprints, paths, pull request URLs, times) and may be
// committed with the scaffold, so another machine can resume.
const FileName = "spirepod.rotation.yaml"

// APIVersion and Kind of the state file.
const (
	APIVersion = "spirepod/v1alpha1"
	Kind       = "Rotation"
)

// How pods move to the new CA in phase 3.
const (
	// RollInPlace re-issues each pod's agent certificate; the gen-cert
	// sidecar writes it into the running pod and the agent re-attests with
	// it at its next SVID rotation. No pod restarts, no fetch fails.
	RollInPlace = "in-place"
	// RollRestart re-issues the certificate, then deletes the pod (highest
	// ordinal first, one at a time, each Ready before the next): faster,
	// but each pod's workloads are down while it restarts.
	RollRestart = "restart"
)

// CA identifies one of the rotation's two CAs.
type CA struct {
	SHA1     string    `yaml:"sha1" json:"sha1"`
	Subject  string    `yaml:"subject" json:"subject"`
	NotAfter time.Time `yaml:"notAfter" json:"notAfter"`
}

// PR is a pull request a step opened.
type PR struct {
	Step   string `yaml:"step" json:"step"`
	Kind   string `yaml:"kind" json:"kind"`
	Branch string `yaml:"branch" json:"branch"`
	URL    string `yaml:"url,omitempty" json:"url,omitempty"`
	Number int    `yaml:"number,omitempty" json:"number,omitempty"`
}

// Pod is how far one pod is in phase 3.
type Pod struct {
	// Leaf is the SHA-1 of the pod's agent certificate issued by the new CA.
	Leaf string `yaml:"leaf,omitempty" json:"leaf,omitempty"`
	// Issued is when the Secret was seen holding it.
	Issued time.Time `yaml:"issued,omitempty" json:"issued,omitzero"`
	// Restarted is when the pod was deleted (RollRestart).
	Restarted time.Time `yaml:"restarted,omitempty" json:"restarted,omitzero"`
	// Attested is when its agent was seen attesting with the new leaf.
	Attested time.Time `yaml:"attested,omitempty" json:"attested,omitzero"`
	// How says what showed it: the agent log line, or the pod Ready.
	How string `yaml:"how,omitempty" json:"how,omitempty"`
}

// State is the content of spirepod.rotation.yaml.
type State struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`
	Emergency  bool   `yaml:"emergency" json:"emergency"`
	Roll       string `yaml:"roll" json:"roll"`
	// Format is the registration format of the pull requests.
	Format  string    `yaml:"format" json:"format"`
	Started time.Time `yaml:"started" json:"started"`
	Old     CA        `yaml:"old" json:"old"`
	// New is empty until phase 1 made the new CA.
	New CA `yaml:"new" json:"new"`
	// Steps maps each finished step to when it finished.
	Steps map[string]time.Time `yaml:"steps" json:"steps"`
	PRs   []PR                 `yaml:"pullRequests,omitempty" json:"pullRequests,omitempty"`
	Pods  map[string]*Pod      `yaml:"pods,omitempty" json:"pods,omitempty"`
	// Done is when the last step finished.
	Done time.Time `yaml:"done,omitempty" json:"done,omitzero"`

	dir string
}

// Path is the state file of the scaffold in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// StateError is a state file that cannot be used (exit 2: the input is bad).
type StateError struct {
	Path string
	Err  error
}

func (e *StateError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *StateError) Unwrap() error { return e.Err }

// Load reads the scaffold's rotation state; nil, nil when there is none.
func Load(p *project.Project) (*State, error) {
	path := Path(p.Dir)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Path: path, Err: err}
	}
	var s State
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return nil, &StateError{Path: path, Err: fmt.Errorf("parse: %w", err)}
	}
	if s.APIVersion != APIVersion || s.Kind != Kind {
		return nil, &StateError{Path: path, Err: fmt.Errorf("apiVersion %q kind %q: this spirepod reads %s %s", s.APIVersion, s.Kind, APIVersion, Kind)}
	}
	if !sha1Hex(s.Old.SHA1) || (s.New.SHA1 != "" && !sha1Hex(s.New.SHA1)) {
		return nil, &StateError{Path: path, Err: errors.New("old.sha1 and new.sha1 must be 40 lowercase hex digits")}
	}
	switch s.Roll {
	case RollInPlace, RollRestart:
	default:
		return nil, &StateError{Path: path, Err: fmt.Errorf("roll %q must be %s or %s", s.Roll, RollInPlace, RollRestart)}
	}
	if s.Steps == nil {
		s.Steps = map[string]time.Time{}
	}
	if s.Pods == nil {
		s.Pods = map[string]*Pod{}
	}
	s.dir = p.Dir
	return &s, nil
}

// Save writes the state atomically (temp file, fsync, rename).
func (s *State) Save() error {
	var buf bytes.Buffer
	buf.WriteString("# spirepod pki rotate: the state of the team CA rotation. No secret is in here;\n")
	buf.WriteString("# commit it with the scaffold so any machine can resume (`spirepod pki rotate`).\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return atomicfile.WriteFile(Path(s.dir), buf.Bytes(), atomicfile.Options{Perm: 0o644})
}

// done reports whether a step finished.
func (s *State) done(step string) bool {
	_, ok := s.Steps[step]
	return ok
}

// pr is the pull request a step opened, if any.
func (s *State) pr(step string) *PR {
	for i := range s.PRs {
		if s.PRs[i].Step == step {
			return &s.PRs[i]
		}
	}
	return nil
}

func (s *State) setPR(p PR) {
	for i := range s.PRs {
		if s.PRs[i].Step == p.Step {
			s.PRs[i] = p
			return
		}
	}
	s.PRs = append(s.PRs, p)
}

func (s *State) pod(name string) *Pod {
	if s.Pods[name] == nil {
		s.Pods[name] = &Pod{}
	}
	return s.Pods[name]
}

func sha1Hex(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Finished reports whether a step of the rotation finished.
func (s *State) Finished(step string) bool { return s.done(step) }
