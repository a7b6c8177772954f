package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spirepod/spirepod/internal/atomicfile"
)

// KeyType names a CA key algorithm and size.
type KeyType string

const (
	KeyECP256  KeyType = "ec-p256"
	KeyECP384  KeyType = "ec-p384"
	KeyRSA2048 KeyType = "rsa-2048"
	KeyRSA3072 KeyType = "rsa-3072"
	KeyRSA4096 KeyType = "rsa-4096"
)

// DefaultKeyType is the CA key type when none is given.
const DefaultKeyType = KeyECP256

// KeyTypes lists the accepted key types, default first.
var KeyTypes = []KeyType{KeyECP256, KeyECP384, KeyRSA2048, KeyRSA3072, KeyRSA4096}

// ParseKeyType checks a --key-type value.
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range KeyTypes {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown key type %q (want one of %s)", s, strings.Join(names, ", "))
}

// generateKey makes a key of type kt and returns it with the signature
// algorithm that goes with it.
func generateKey(kt KeyType, rnd io.Reader) (crypto.Signer, x509.SignatureAlgorithm, error) {
	switch kt {
	case KeyECP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
		return k, x509.ECDSAWithSHA256, err
	case KeyECP384:
		k, err := ecdsa.GenerateKey(elliptic.P384(), rnd)
		return k, x509.ECDSAWithSHA384, err
	case KeyRSA2048, KeyRSA3072, KeyRSA4096:
		bits := map[KeyType]int{KeyRSA2048: 2048, KeyRSA3072: 3072, KeyRSA4096: 4096}[kt]
		k, err := rsa.GenerateKey(rnd, bits)
		return k, x509.SHA256WithRSA, err
	}
	return nil, 0, fmt.Errorf("unknown key type %q", kt)
}

// RandomSerial returns a positive random 128-bit serial number.
func RandomSerial(rnd io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return nil, fmt.Errorf("read random serial: %w", err)
	}
	b[0] &= 0x7f // positive in DER without a leading zero byte
	if b[0] == 0 {
		b[0] = 0x40 // keep it a full-width 128-bit-ish value, never zero
	}
	return new(big.Int).SetBytes(b), nil
}

// DefaultSubject is the CA subject for a team.
func DefaultSubject(team string) pkix.Name {
	return pkix.Name{CommonName: team + " x509pop agent CA", Organization: []string{team}}
}

// ParseSubject reads a subject in RFC 4514 style ("CN=x,O=y") or OpenSSL
// style ("/CN=x/O=y"). A value without "=" is refused (naming the CN= it
// may have meant), not taken as a common name behind the user's back.
// Known attributes: CN, O, OU, C, ST, L.
func ParseSubject(s string) (pkix.Name, error) {
	s = strings.TrimSpace(s)
	var n pkix.Name
	if s == "" {
		return n, errors.New("subject is empty")
	}
	if !strings.Contains(s, "=") {
		return pkix.Name{}, fmt.Errorf("%q has no KEY=VALUE (for a common name write \"CN=%s\")", s, s)
	}
	var parts []string
	if strings.HasPrefix(s, "/") {
		parts = strings.Split(strings.TrimPrefix(s, "/"), "/")
	} else {
		parts = strings.Split(s, ",")
	}
	for _, p := range parts {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || v == "" {
			return pkix.Name{}, fmt.Errorf("subject part %q is not KEY=VALUE", p)
		}
		switch strings.ToUpper(k) {
		case "CN":
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "L":
			n.Locality = append(n.Locality, v)
		default:
			return pkix.Name{}, fmt.Errorf("subject attribute %q is not one of CN, O, OU, C, ST, L", k)
		}
	}
	if n.CommonName == "" {
		return pkix.Name{}, errors.New("subject needs a CN")
	}
	return n, nil
}

// GenerateOptions say what CA to make and where to write it.
type GenerateOptions struct {
	CertPath string
	KeyPath  string
	KeyType  KeyType       // empty means DefaultKeyType
	Validity time.Duration // zero means DefaultCAValidity
	Subject  pkix.Name
	// Force replaces an existing certificate and key.
	Force bool
	// DryRun runs every check and builds the result but writes nothing.
	DryRun bool
	// Rand is the randomness for the serial (and the key where the Go
	// runtime honours a caller's reader).
	Rand io.Reader
	// Now is the clock.
	Now func() time.Time
	// BeforeCommit, when set, runs with the final path and the temp file
	// before each file is moved into place; tests inject failures with it.
	BeforeCommit func(path, tmp string) error
	// BackupDir, when set, keeps the CA that Force replaces: its
	// certificate and key are copied there (0600, the directory 0700) before
	// anything is written, so no replaced key is ever lost.
	BackupDir string
}

// CAInfo describes a CA certificate for the CLI to print.
type CAInfo struct {
	Subject   string    `json:"subject"`
	KeyType   string    `json:"keyType"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	SHA256    string    `json:"sha256"`
	SHA1      string    `json:"sha1"`
	Selector  string    `json:"selector"`
}

// Describe returns the printable facts about a CA certificate.
func Describe(c *x509.Certificate) CAInfo {
	return CAInfo{
		Subject:   c.Subject.String(),
		KeyType:   describeKey(c.PublicKey),
		Serial:    fmt.Sprintf("%x", c.SerialNumber),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    SHA256Fingerprint(c),
		SHA1:      SHA1Fingerprint(c),
		Selector:  CAFingerprintSelector(c),
	}
}

func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return string(KeyECP256)
		case elliptic.P384():
			return string(KeyECP384)
		}
		return "ec-" + strings.ToLower(k.Curve.Params().Name)
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// GenerateResult is what Generate made.
type GenerateResult struct {
	Cert     *x509.Certificate
	CertPath string
	KeyPath  string
	// Replaced is the certificate that --force replaced, if one parsed.
	Replaced *x509.Certificate
	// BackedUp are the copies of the replaced certificate and key in
	// BackupDir.
	BackedUp []string
}

// ExistsError says a file is already there and Force was not set.
type ExistsError struct{ Path string }

func (e *ExistsError) Error() string { return e.Path + " already exists" }
func (e *ExistsError) Unwrap() error { return fs.ErrExist }

// Generate makes a team CA for x509pop and writes its key (PKCS#8, 0600,
// never over an existing file unless Force) and certificate (0644).
func Generate(ctx context.Context, opts GenerateOptions) (*GenerateResult, error) {
	if opts.KeyType == "" {
		opts.KeyType = DefaultKeyType
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Validity < MinCAValidity {
		return nil, fmt.Errorf("validity %s is shorter than the minimum of %s", opts.Validity, MinCAValidity)
	}
	if opts.Subject.CommonName == "" {
		return nil, errors.New("the CA subject needs a common name")
	}
	if err := checkTargets(opts.CertPath, opts.KeyPath, opts.Force); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, sigAlg, err := generateKey(opts.KeyType, opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", opts.KeyType, err)
	}
	serial, err := RandomSerial(opts.Rand)
	if err != nil {
		return nil, err
	}
	now := opts.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               opts.Subject,
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.Add(opts.Validity),
		SignatureAlgorithm:    sigAlg,
		KeyUsage:              CAKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	// Go computes the subject key ID of a CA from its public key; it also
	// marks basicConstraints and keyUsage critical.
	der, err := x509.CreateCertificate(opts.Rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodePKCS8(key)
	if err != nil {
		return nil, err
	}
	res := &GenerateResult{Cert: cert, CertPath: opts.CertPath, KeyPath: opts.KeyPath}
	if opts.Force {
		if data, err := os.ReadFile(opts.CertPath); err == nil {
			if cs, err := ParseCertificates(data); err == nil {
				res.Replaced = cs[0]
			}
		}
	}
	if !opts.DryRun { // DryRun: every check ran, nothing is written
		// Making an RSA key takes long enough to be interrupted: nothing is
		// written once the context is done.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if res.BackedUp, err = Backup(opts.CertPath, opts.KeyPath, opts.BackupDir); err != nil {
			return nil, err
		}
		if err := writePair(opts.CertPath, EncodeCertificate(cert), opts.KeyPath, keyPEM, opts.Force, opts.BeforeCommit); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// Backup copies the CA at certPath and keyPath into dir as <sha1>.crt.pem
// and <sha1>.key.pem (both 0600; dir 0700; an existing copy of the same CA
// is kept), before a write replaces them. Nothing to keep (no key, or an
// empty placeholder, or dir "") is no error. It returns the copies' paths.
func Backup(certPath, keyPath, dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	key, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(key) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("back up the key %s: %w", keyPath, err)
	}
	cert, err := os.ReadFile(certPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("back up the certificate %s: %w", certPath, err)
	}
	name := "key-" + fmt.Sprintf("%x", sha256.Sum256(key))[:16] // a key without its certificate
	if cs, perr := ParseCertificates(cert); perr == nil && len(cs) > 0 {
		name = SHA1Fingerprint(cs[0])
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("back up the team CA: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("back up the team CA: %w", err)
	}
	var out []string
	for _, f := range []struct {
		data []byte
		path string
	}{{key, filepath.Join(dir, name+".key.pem")}, {cert, filepath.Join(dir, name+".crt.pem")}} {
		if len(f.data) == 0 {
			continue
		}
		if have, err := os.ReadFile(f.path); err == nil && bytes.Equal(have, f.data) {
			out = append(out, f.path)
			continue
		}
		if err := atomicfile.WriteFile(f.path, f.data, atomicfile.Options{Perm: 0o600}); err != nil {
			return nil, fmt.Errorf("back up the team CA to %s: %w", f.path, err)
		}
		out = append(out, f.path)
	}
	return out, nil
}

// IsPlaceholder reports whether path is an empty regular file: the
// stand-in `spirepod init` writes until the team CA is made.
func IsPlaceholder(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == 0
}

// checkTargets refuses early when a file exists (without force) or a
// directory is missing, before any key is made.
func checkTargets(certPath, keyPath string, force bool) error {
	for _, p := range []string{keyPath, certPath} {
		if p == "" {
			return errors.New("certificate and key paths must be set")
		}
		dir := filepath.Dir(p)
		st, err := os.Stat(dir)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the message names dir already
			}
			return fmt.Errorf("directory %s: %w", dir, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		if st, err := os.Lstat(p); err == nil {
			if st.IsDir() {
				return fmt.Errorf("%s is a directory", p)
			}
			if !force && !IsPlaceholder(p) {
				return &ExistsError{Path: p}
			}
		}
	}
	return nil
}

// writePair writes the key (0600) then the certificate (0644), each
// atomically. If the certificate cannot be written, the key is put back as
// it was (removed, or its old content restored), so the pair never
// mismatches on disk.
func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte, force bool, hook func(path, tmp string) error) error {
	oldKey, oldKeyErr := os.ReadFile(keyPath)
	hadKey := oldKeyErr == nil
	opt := func(perm fs.FileMode, path string) atomicfile.Options {
		// An empty placeholder (written by `spirepod init` so the
		// kustomization builds from day one) is replaced like a missing file.
		o := atomicfile.Options{Perm: perm, NoClobber: !force && !IsPlaceholder(path)}
		if hook != nil {
			o.TestHookBeforeCommit = func(tmp string) error { return hook(path, tmp) }
		}
		return o
	}
	if err := atomicfile.WriteFile(keyPath, keyPEM, opt(0o600, keyPath)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &ExistsError{Path: keyPath}
		}
		return fmt.Errorf("write key %s: %w", keyPath, err)
	}
	if err := atomicfile.WriteFile(certPath, certPEM, opt(0o644, certPath)); err != nil {
		var undo error
		if hadKey {
			undo = atomicfile.WriteFile(keyPath, oldKey, atomicfile.Options{Perm: 0o600})
		} else {
			undo = os.Remove(keyPath)
		}
		if undo != nil {
			return fmt.Errorf("write certificate %s: %w (and the new key %s could not be rolled back: %v)", certPath, err, keyPath, undo)
		}
		if errors.Is(err, fs.ErrExist) {
			return &ExistsError{Path: certPath}
		}
		return fmt.Errorf("write certificate %s: %w", certPath, err)
	}
	return nil
}
