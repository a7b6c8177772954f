package scaffold

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spirepod/spirepod/internal/pki"
)

// BundleExpiryWarning is how close to its end a server CA is worth a warning.
const BundleExpiryWarning = 30 * 24 * time.Hour

// NormalizeBundle is the server CA bundle as spirepod writes it: the
// certificates only (no text or keys around them), PEM with LF line ends.
func NormalizeBundle(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pki.EncodeCertificate(c)...)
	}
	return out
}

// BundleProblem is what is wrong with a server CA bundle at now.
type BundleProblem struct {
	// Fatal: the agent cannot use it (empty, expired, not yet valid).
	Fatal   bool
	Message string
}

// JudgeBundle judges server CA certificates at now: none, expired or not yet
// valid is fatal (the agent cannot verify the server); ending within
// BundleExpiryWarning is a warning. nil means fine.
func JudgeBundle(certs []*x509.Certificate, now time.Time) *BundleProblem {
	if len(certs) == 0 {
		return &BundleProblem{Fatal: true, Message: "the bundle is empty: the agent cannot verify the SPIRE server and exits at start"}
	}
	for _, c := range certs {
		switch {
		case now.Before(c.NotBefore):
			return &BundleProblem{Fatal: true, Message: fmt.Sprintf("server CA %s is not valid before %s", c.Subject, c.NotBefore.UTC().Format(time.RFC3339))}
		case now.After(c.NotAfter):
			return &BundleProblem{Fatal: true, Message: fmt.Sprintf("server CA %s expired %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	for _, c := range certs {
		if left := c.NotAfter.Sub(now); left < BundleExpiryWarning {
			return &BundleProblem{Message: fmt.Sprintf("server CA %s expires in %d days (%s): ask the SPIRE operators for its successor",
				c.Subject, int(left.Hours()/24), c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	return nil
}
