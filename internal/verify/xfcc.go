package verify

import (
	"encoding/json"
	"strings"
)

// xfccHeader is the header an httpbin-like echo service reflects back to curl.
const xfccHeader = "x-forwarded-client-cert"

// Element is one comma-separated element of an X-Forwarded-Client-Cert
// header: the client certificate of one hop, as Envoy describes it.
type Element struct {
	By      []string `json:"by,omitempty"`
	Hash    string   `json:"hash,omitempty"`
	URI     []string `json:"uri,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	Subject string   `json:"subject,omitempty"`
}

// FindXFCC returns the value of an X-Forwarded-Client-Cert header in one log
// line, or false. It understands httpbin's JSON echo
// (`"X-Forwarded-Client-Cert": "By=...;URI=..."`, with JSON escapes) and a
// raw header line (`X-Forwarded-Client-Cert: By=...`). The header name is
// case-insensitive.
func FindXFCC(line string) (string, bool) {
	i := indexFoldASCII(line, xfccHeader)
	if i < 0 {
		return "", false
	}
	rest := line[i+len(xfccHeader):]
	// JSON: the name is quoted, then a colon, then a JSON string.
	if strings.HasPrefix(rest, `"`) {
		rest = strings.TrimLeft(rest[1:], " \t")
		if !strings.HasPrefix(rest, ":") {
			return "", false
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if !strings.HasPrefix(rest, `"`) {
			return "", false
		}
		end := jsonStringEnd(rest)
		if end < 0 {
			return "", false
		}
		var v string
		if err := json.Unmarshal([]byte(rest[:end+1]), &v); err != nil {
			return "", false
		}
		return v, true
	}
	// Raw header: name, colon, value to the end of the line.
	rest = strings.TrimLeft(rest, " \t")
	if !strings.HasPrefix(rest, ":") {
		return "", false
	}
	return strings.TrimSpace(rest[1:]), true
}

// indexFoldASCII is the index of the first match of the lower-case ASCII
// needle in s, ignoring ASCII case, on s's own bytes (lower-casing a copy
// first would shift offsets wherever s holds invalid UTF-8).
func indexFoldASCII(s, needle string) int {
	n := len(needle)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == n {
			return i
		}
	}
	return -1
}

// jsonStringEnd returns the index of the closing quote of the JSON string
// that starts at s[0], or -1.
func jsonStringEnd(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// ParseXFCC splits an X-Forwarded-Client-Cert value into its elements as
// Envoy writes them: elements separated by commas, key=value pairs by
// semicolons, values optionally double-quoted (a quoted value may hold , ; =
// and backslash-escaped quotes). Keys are case-insensitive. Unknown keys
// (Cert, Chain) are ignored.
func ParseXFCC(v string) []Element {
	var out []Element
	for _, elem := range splitUnquoted(v, ',') {
		if strings.TrimSpace(elem) == "" {
			continue
		}
		var e Element
		for _, pair := range splitUnquoted(elem, ';') {
			k, val, ok := strings.Cut(pair, "=")
			if !ok {
				continue
			}
			val = unquote(strings.TrimSpace(val))
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "by":
				e.By = append(e.By, val)
			case "hash":
				e.Hash = val
			case "uri":
				e.URI = append(e.URI, val)
			case "dns":
				e.DNS = append(e.DNS, val)
			case "subject":
				e.Subject = val
			}
		}
		out = append(out, e)
	}
	return out
}

// splitUnquoted splits s at sep outside double quotes.
func splitUnquoted(s string, sep byte) []string {
	var parts []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// Sighting is what one log line says about the workload's identity.
type Sighting struct {
	// Matched is true when the judged element's URI equals the expected ID
	// exactly.
	Matched bool
	// URIs are the judged element's URIs (without duplicates).
	URIs []string
	// NoUpstream is set when upstream was given and no element has it in
	// By: the header was not written by the upstream verify expects.
	NoUpstream bool
}

// MatchLine looks for an XFCC header in a log line and judges one element:
// the one the upstream appended. Envoy appends its hop's element at the end
// (earlier elements come from the request and can be forged by anyone who
// can send one), so it is the last element whose By= is upstream, or the last
// element when upstream is "". The element's URI must equal expected
// exactly. ok is false when the line has no XFCC header.
func MatchLine(line, expected, upstream string) (s Sighting, ok bool) {
	v, found := FindXFCC(line)
	if !found {
		return s, false
	}
	es := ParseXFCC(v)
	judged := -1
	for i := len(es) - 1; i >= 0; i-- {
		if upstream == "" || contains(es[i].By, upstream) {
			judged = i
			break
		}
	}
	if judged < 0 {
		s.NoUpstream = len(es) > 0
		return s, true
	}
	for _, u := range es[judged].URI {
		if u == expected {
			s.Matched = true
		}
		if !contains(s.URIs, u) {
			s.URIs = append(s.URIs, u)
		}
	}
	return s, true
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
