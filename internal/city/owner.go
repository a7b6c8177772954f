package city

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Owner is who put a CA on the trust list.
type Owner struct {
	Team      string `json:"team,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// SHA1 is the certificate's fingerprint the record names.
	SHA1 string `json:"sha1,omitempty"`
	// Line is the owner comment's line (0 when not from a comment).
	Line int `json:"line,omitempty"`
	// Source says how the owner is known: "comment", "file name",
	// "commit <hash>" or "author <name> (commit <hash>)".
	Source string `json:"source,omitempty"`
	// Author is set when only the git author is known.
	Author string `json:"author,omitempty"`
}

// OwnerComment is the line `pr trust-ca` writes directly above a team's PEM
// block in a bundle-mode trust list (no newline). The SPIRE server's x509pop
// loader reads the file with encoding/pem, which skips text between blocks.
func OwnerComment(team, namespace, sha1 string) string {
	return fmt.Sprintf("# spirepod: team=%s namespace=%s sha1=%s", team, namespace, strings.ToLower(sha1))
}

var ownerLine = regexp.MustCompile(`^\s*#\s*spirepod:\s+team=(\S+)\s+namespace=(\S+)\s+sha1=([0-9a-fA-F]{40})\s*$`)

// ParseOwnerComments reads every owner comment of a trust-list file, by the
// fingerprint it names. When two comments name the same fingerprint the
// first one wins (`city check` reports the conflict as SPD311).
func ParseOwnerComments(data []byte) map[string]Owner {
	out := map[string]Owner{}
	for _, o := range ownerComments(data) {
		if _, dup := out[o.SHA1]; !dup {
			out[o.SHA1] = o
		}
	}
	return out
}

// ownerComments lists every owner comment in file order.
func ownerComments(data []byte) []Owner {
	if !bytes.Contains(data, []byte("spirepod:")) {
		return nil
	}
	var out []Owner
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		m := ownerLine.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		out = append(out, Owner{Team: string(m[1]), Namespace: string(m[2]), SHA1: strings.ToLower(string(m[3])), Line: n, Source: "comment"})
	}
	return out
}

// spirepodCommit is what `pr trust-ca` writes in its commit message.
var spirepodCommit = regexp.MustCompile(`x509pop CA of team (\S+) \(namespace ([^)\s]+)\)`)

// ownerFromCommit reads the owner from a commit message spirepod wrote.
func ownerFromCommit(msg string) (team, namespace string, ok bool) {
	m := spirepodCommit.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

func (o Owner) String() string {
	switch {
	case o.Team != "" && o.Namespace != "":
		return fmt.Sprintf("team %s (namespace %s)", o.Team, o.Namespace)
	case o.Team != "":
		return "team " + o.Team
	case o.Namespace != "":
		return "namespace " + o.Namespace
	case o.Author != "":
		return "author " + o.Author
	}
	return "unknown"
}
