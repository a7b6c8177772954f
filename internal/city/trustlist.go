package city

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // SPIRE's x509pop:ca:fingerprint is defined as SHA-1
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"path"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/spirepod/spirepod/internal/project"
)

// trustBlock is one PEM block of the trust list.
type trustBlock struct {
	File string
	Line int
	Type string
	// Key is the SHA-1 of the block's bytes: for a certificate, its
	// x509pop:ca:fingerprint.
	Key string
	der []byte
	// cert and parseErr are filled by parse, on first use: a check of a
	// change parses only the certificates it involves.
	cert     *x509.Certificate
	parseErr error
	parsed   bool
	// Trusted is false for a directory-mode file the kustomization does not
	// list: the server never sees it.
	Trusted bool
	Owner   Owner
	// aboveLine is the owner comment directly above the block, if any.
	above *Owner
}

func (b *trustBlock) isCert() bool { return b.Type == "CERTIFICATE" }

// parse is the block's certificate, parsed once.
func (b *trustBlock) parse() (*x509.Certificate, error) {
	if !b.parsed {
		b.cert, b.parseErr = x509.ParseCertificate(b.der)
		b.parsed = true
	}
	return b.cert, b.parseErr
}

// trustList is the x509pop trust list as the city holds it.
type trustList struct {
	Mode    string
	Path    string
	Present bool
	Blocks  []*trustBlock
	// Comments are every owner comment, by file.
	Comments map[string][]Owner
	// Unlisted are directory-mode PEM files the kustomization does not list;
	// Missing the files it lists that do not exist (with the listing line).
	Unlisted []string
	Missing  []listed
	// Kustomization is the directory's kustomization file, if any.
	Kustomization string

	bySHA1 map[string]map[string][]Owner // file → sha1 → comments, in order
	byKey  map[string]*trustBlock
}

// commentsFor lists a file's owner comments naming sha1, in file order.
func (t *trustList) commentsFor(file, sha1 string) []Owner {
	if t.bySHA1 == nil {
		t.bySHA1 = map[string]map[string][]Owner{}
		for f, cs := range t.Comments {
			m := map[string][]Owner{}
			for _, o := range cs {
				m[o.SHA1] = append(m[o.SHA1], o)
			}
			t.bySHA1[f] = m
		}
	}
	return t.bySHA1[file][sha1]
}

type listed struct {
	Name string
	Line int
}

// trustPaths are the paths of files that make up the trust list.
func trustPaths(files []string, tl project.TrustList) []string {
	if tl.Mode != project.TrustListDirectory {
		for _, f := range files {
			if f == tl.Path {
				return []string{f}
			}
		}
		return nil
	}
	var out []string
	for _, f := range files {
		if path.Dir(f) == tl.Path && (isPEMName(f) || isKustomization(f)) {
			out = append(out, f)
		}
	}
	return out
}

func isPEMName(p string) bool {
	return strings.HasSuffix(p, ".pem") || strings.HasSuffix(p, ".crt")
}

// readTrustList parses the trust list from the files that make it up.
func readTrustList(tl project.TrustList, data map[string][]byte) *trustList {
	t := &trustList{Mode: tl.Mode, Path: tl.Path, Comments: map[string][]Owner{}}
	var pems []string
	for p := range data {
		switch {
		case tl.Mode == project.TrustListDirectory && isKustomization(p):
			t.Kustomization = p
		default:
			pems = append(pems, p)
		}
	}
	sort.Strings(pems)
	t.Present = len(pems) > 0 || t.Kustomization != ""
	listedSet := map[string]bool{}
	if t.Kustomization != "" {
		for _, l := range kustomizationFiles(data[t.Kustomization]) {
			name := path.Clean(l.Name)
			listedSet[name] = true
			if _, ok := data[path.Join(tl.Path, name)]; !ok {
				t.Missing = append(t.Missing, l)
			}
		}
	}
	for _, p := range pems {
		trusted := t.Kustomization == "" || tl.Mode != project.TrustListDirectory || listedSet[path.Base(p)]
		if !trusted {
			t.Unlisted = append(t.Unlisted, p)
		}
		blocks, comments := pemBlocks(p, data[p])
		for _, b := range blocks {
			b.Trusted = trusted
		}
		t.Blocks = append(t.Blocks, blocks...)
		if len(comments) > 0 {
			t.Comments[p] = comments
		}
	}
	return t
}

// pemBlocks lists a file's PEM blocks with their lines, as SPIRE's loader
// sees them (encoding/pem: text between blocks is skipped, and so is a
// malformed block, reported here with Type "" and its line).
func pemBlocks(file string, data []byte) ([]*trustBlock, []Owner) {
	comments := ownerComments(data)
	above := map[int]*Owner{}
	for i := range comments {
		above[comments[i].Line+1] = &comments[i]
	}
	var out []*trustBlock
	lines := newLineCounter(data)
	rest := data
	begin := []byte("-----BEGIN ")
	for {
		if bytes.Index(rest, begin) < 0 {
			break
		}
		off := len(data) - len(rest)
		b, next := pem.Decode(rest)
		consumed := rest[:len(rest)-len(next)]
		if b == nil {
			// Every remaining BEGIN is malformed: SPIRE skips them.
			for i := bytes.Index(rest, begin); i >= 0; {
				out = append(out, &trustBlock{File: file, Line: lines.at(off + i)})
				j := bytes.Index(rest[i+1:], begin)
				if j < 0 {
					break
				}
				i += 1 + j
			}
			break
		}
		last := bytes.LastIndex(consumed, begin)
		// Malformed BEGINs the decoder skipped before this block.
		for i := bytes.Index(consumed, begin); i >= 0 && i < last; {
			out = append(out, &trustBlock{File: file, Line: lines.at(off + i)})
			j := bytes.Index(consumed[i+1:], begin)
			if j < 0 {
				break
			}
			i += 1 + j
		}
		sum := sha1.Sum(b.Bytes) //nolint:gosec
		tb := &trustBlock{File: file, Line: lines.at(off + last), Type: b.Type, Key: hex.EncodeToString(sum[:])}
		if tb.isCert() {
			tb.der = b.Bytes
		}
		tb.above = above[tb.Line]
		out = append(out, tb)
		rest = next
	}
	return out, comments
}

// lineCounter turns increasing byte offsets into line numbers.
type lineCounter struct {
	data []byte
	off  int
	line int
}

func newLineCounter(data []byte) *lineCounter { return &lineCounter{data: data, line: 1} }

func (l *lineCounter) at(off int) int {
	if off < l.off { // not increasing: count from the start
		l.off, l.line = 0, 1
	}
	l.line += bytes.Count(l.data[l.off:off], []byte("\n"))
	l.off = off
	return l.line
}

// kustomizationFiles lists the files: of every configMapGenerator and
// secretGenerator ("key=path" entries give their path), with their lines.
func kustomizationFiles(data []byte) []listed {
	type generator struct {
		Files []yaml.Node `yaml:"files"`
	}
	var k struct {
		ConfigMapGenerator []generator `yaml:"configMapGenerator"`
		SecretGenerator    []generator `yaml:"secretGenerator"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil
	}
	var out []listed
	for _, g := range append(k.ConfigMapGenerator, k.SecretGenerator...) {
		for _, f := range g.Files {
			v := f.Value
			if _, p, ok := strings.Cut(v, "="); ok {
				v = p
			}
			out = append(out, listed{Name: strings.TrimPrefix(v, "./"), Line: f.Line})
		}
	}
	return out
}

// trustedBlock is the first block of certificate fp that the server loads
// (a listed file, a certificate that parses), or nil.
func (t *trustList) trustedBlock(fp string) *trustBlock {
	for _, b := range t.Blocks {
		if b.Key != fp || !b.isCert() || !b.Trusted {
			continue
		}
		if _, err := b.parse(); err == nil {
			return b
		}
	}
	return nil
}

// blockOf is the first block of fp, trusted or not.
func (t *trustList) blockOf(fp string) *trustBlock {
	if t.byKey == nil {
		t.byKey = map[string]*trustBlock{}
		for _, b := range t.Blocks {
			if _, dup := t.byKey[b.Key]; !dup && b.Key != "" {
				t.byKey[b.Key] = b
			}
		}
	}
	return t.byKey[fp]
}

// teamFromFileName is a directory-mode file's team: <team>.crt.pem.
func teamFromFileName(p string) string {
	base := path.Base(p)
	for _, suf := range []string{".crt.pem", ".pem", ".crt"} {
		if s, ok := strings.CutSuffix(base, suf); ok {
			return s
		}
	}
	return base
}
