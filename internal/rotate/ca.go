package rotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// Files are a CA's certificate and key in the scaffold.
type Files struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// CurrentFiles are the scaffold's team CA (paths in spirepod.yaml): what
// certs/ applies and every pull request reads.
func CurrentFiles(p *project.Project) Files {
	return Files{Cert: p.Path(p.Paths.CACert), Key: p.Path(p.Paths.CAKey)}
}

// NextFiles hold the new CA from phase 1 until phase 3 moves it in:
// agent-x509pop.next.crt.pem and agent-x509pop.next.key.pem (git-ignored
// like every *.key.pem).
func NextFiles(p *project.Project) Files { return tagged(p, "next") }

// OldFiles hold the old CA from phase 3 until phase 4 deletes its key.
func OldFiles(p *project.Project) Files { return tagged(p, "old") }

func tagged(p *project.Project, tag string) Files {
	c := CurrentFiles(p)
	return Files{Cert: withTag(c.Cert, tag), Key: withTag(c.Key, tag)}
}

// withTag inserts .tag before the file's last extension, or before .crt.pem
// or .key.pem: agent-x509pop.crt.pem → agent-x509pop.next.crt.pem.
func withTag(path, tag string) string {
	dir, base := filepath.Split(path)
	for _, ext := range []string{".crt.pem", ".key.pem"} {
		if stem, ok := strings.CutSuffix(base, ext); ok && stem != "" {
			return filepath.Join(dir, stem+"."+tag+ext)
		}
	}
	ext := filepath.Ext(base)
	if ext == "" || ext == base {
		return path + "." + tag
	}
	return filepath.Join(dir, strings.TrimSuffix(base, ext)+"."+tag+ext)
}

// loaded is a CA read from the scaffold.
type loaded struct {
	Cert *x509.Certificate
	Key  crypto.Signer // nil when the key file is gone or not asked for
}

// readCA reads a certificate and, when withKey, its key. A missing
// certificate is (nil, nil).
func readCA(f Files, withKey bool) (*loaded, error) {
	data, err := os.ReadFile(f.Cert)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Cert, err)
	}
	out := &loaded{Cert: certs[0]}
	if !withKey {
		return out, nil
	}
	kd, err := os.ReadFile(f.Key)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := pki.ParsePrivateKey(kd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Key, err)
	}
	if !pki.KeyMatches(out.Cert, key) {
		return nil, fmt.Errorf("%s does not belong to the certificate %s", f.Key, f.Cert)
	}
	out.Key = key
	return out, nil
}

// Profile is what the new CA copies from the old one.
type Profile struct {
	KeyType  pki.KeyType   `json:"keyType"`
	Validity time.Duration `json:"validity"`
	Subject  string        `json:"subject"`
}

// ProfileOf reads the old CA's key type, validity (rounded to whole days)
// and subject.
func ProfileOf(old *x509.Certificate) (Profile, error) {
	kt, err := pki.ParseKeyType(pki.Describe(old).KeyType)
	if err != nil {
		return Profile{}, fmt.Errorf("the current CA's key (%s) is not one spirepod makes: %w", pki.Describe(old).KeyType, err)
	}
	v := old.NotAfter.Sub(old.NotBefore).Round(24 * time.Hour)
	if v < pki.MinCAValidity {
		v = pki.MinCAValidity
	}
	return Profile{KeyType: kt, Validity: v, Subject: old.Subject.String()}, nil
}

// prepare makes the new CA at NextFiles, never over an existing file, with
// the old CA's profile. A new CA already there from an interrupted run is
// taken when no other rotation has claimed it.
func prepare(ctx context.Context, p *project.Project, old *x509.Certificate, rnd io.Reader, now func() time.Time) (*x509.Certificate, error) {
	next := NextFiles(p)
	if ex, err := readCA(next, true); err != nil {
		return nil, &InputError{Path: next.Cert, Err: err, Hint: "move the file away: `spirepod pki rotate` makes the new CA there"}
	} else if ex != nil {
		if ex.Key == nil {
			return nil, &InputError{Path: next.Key, Err: errors.New("the new CA's key is missing"),
				Hint: "restore the key from where the rotation began, or delete " + next.Cert + " and start again"}
		}
		return ex.Cert, nil
	}
	prof, err := ProfileOf(old)
	if err != nil {
		return nil, err
	}
	res, err := pki.Generate(ctx, pki.GenerateOptions{CertPath: next.Cert, KeyPath: next.Key, KeyType: prof.KeyType,
		Validity: prof.Validity, Subject: old.Subject, Rand: rnd, Now: now})
	if err != nil {
		var ee *pki.ExistsError
		if errors.As(err, &ee) {
			return nil, &InputError{Path: ee.Path, Err: errors.New("exists without its certificate"),
				Hint: "a key without a certificate is left from something else: move it away, then run again"}
		}
		return nil, err
	}
	return res.Cert, nil
}

// swapFiles moves the new CA into the scaffold's current paths and the old
// one aside to OldFiles. Each file moves by itself (copy aside, then an
// atomic rename), and which CA a file holds is decided by its content, so
// a crash between any two moves is finished by the next run.
func swapFiles(p *project.Project, oldFP, newFP string) error {
	cur, next, old := CurrentFiles(p), NextFiles(p), OldFiles(p)
	// The certificate.
	curC, err := readCA(Files{Cert: cur.Cert}, false)
	if err != nil {
		return err
	}
	nextC, err := readCA(Files{Cert: next.Cert}, false)
	if err != nil {
		return err
	}
	switch {
	case curC != nil && pki.SHA1Fingerprint(curC.Cert) == newFP:
		// moved already
	case curC != nil && pki.SHA1Fingerprint(curC.Cert) == oldFP && nextC != nil && pki.SHA1Fingerprint(nextC.Cert) == newFP:
		if err := copyAside(cur.Cert, old.Cert, 0o644); err != nil {
			return err
		}
		if err := os.Rename(next.Cert, cur.Cert); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s holds neither the old CA (%s) nor the new one (%s is not there to move in)", cur.Cert, oldFP, next.Cert)
	}
	// The key: matched to the certificates by its public key.
	newCert, err := readCA(Files{Cert: cur.Cert}, false)
	if err != nil {
		return err
	}
	curK, err := readKey(cur.Key)
	if err != nil {
		return err
	}
	if curK != nil && pki.KeyMatches(newCert.Cert, curK) {
		return nil
	}
	nextK, err := readKey(next.Key)
	if err != nil {
		return err
	}
	if nextK == nil || !pki.KeyMatches(newCert.Cert, nextK) {
		return fmt.Errorf("the new CA's key is not at %s: restore it (it never left this machine), then run again", next.Key)
	}
	if curK != nil {
		if err := copyAside(cur.Key, old.Key, 0o600); err != nil {
			return err
		}
	}
	return os.Rename(next.Key, cur.Key)
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return pki.ParsePrivateKey(data)
}

// copyAside writes src's content to dst (mode perm, atomically, never over
// a different file); a dst with the same content is fine.
func copyAside(src, dst string, perm fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if have, err := os.ReadFile(dst); err == nil {
		if string(have) == string(data) {
			return nil
		}
		return fmt.Errorf("%s exists with other content: move it away, then run again", dst)
	}
	return atomicfile.WriteFile(dst, data, atomicfile.Options{Perm: perm, NoClobber: true})
}

// InputError is a file the rotation cannot use (exit 2).
type InputError struct {
	Path string
	Err  error
	Hint string
}

func (e *InputError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *InputError) Unwrap() error { return e.Err }

func describe(c *x509.Certificate) CA {
	return CA{SHA1: pki.SHA1Fingerprint(c), Subject: c.Subject.String(), NotAfter: c.NotAfter.UTC()}
}
