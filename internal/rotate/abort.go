package rotate

import (
	"errors"
	"fmt"
	"os"

	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// ErrCannotAbort: the rotation went past the point where it can be undone
// from the team's side alone.
var ErrCannotAbort = errors.New("the rotation cannot be aborted")

// AbortResult is what Abort did and what is left for the user.
type AbortResult struct {
	// Kept are the new CA's certificate and key, moved into BackupDir.
	Kept []string `json:"kept,omitempty"`
	// OpenPRs are the rotation's pull requests, to close by hand.
	OpenPRs []PR `json:"openPullRequests,omitempty"`
}

// Abort ends a rotation that has not reached the city's base branch or the
// cluster yet: no pull request of it is merged and the scaffold's CA files
// and the issuer still hold the old CA. The new CA (certificate and key)
// moves into backupDir (never deleted: a pull request may carry it), the
// state file goes, and the rotation's pull requests are listed to be
// closed. Past that point it returns ErrCannotAbort with the reason: the
// rotation must then be finished (`spirepod pki rotate`).
func Abort(p *project.Project, backupDir string) (*AbortResult, error) {
	s, err := Load(p)
	if err != nil {
		return nil, err
	}
	if s == nil || !s.Done.IsZero() {
		return nil, fmt.Errorf("%w: no rotation is running (%s)", ErrCannotAbort, FileName)
	}
	if err := s.CanAbort(); err != nil {
		return nil, err
	}
	next := NextFiles(p)
	res := &AbortResult{OpenPRs: s.PRs}
	kept, err := pki.Backup(next.Cert, next.Key, backupDir)
	if err != nil {
		return nil, err
	}
	res.Kept = kept
	if len(kept) == 0 {
		// No key to keep; the certificate alone (if any) is public.
		if _, err := os.Stat(next.Cert); err == nil {
			if kept, err = keepCert(next.Cert, backupDir); err != nil {
				return nil, err
			}
			res.Kept = kept
		}
	}
	for _, f := range []string{next.Key, next.Cert} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if err := os.Remove(Path(p.Dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return res, nil
}

// CanAbort is nil while the rotation has changed nothing outside the
// scaffold's own next files: no pull request merged, the CA files and the
// issuer's Secret still the old CA. Otherwise ErrCannotAbort with why.
func (s *State) CanAbort() error {
	for _, step := range []string{StepMerged, StepFilesSwapped, StepSecretSwitched, StepServerTrustsNew} {
		if s.done(step) {
			what := map[string]string{
				StepMerged:          "its pull requests are merged into the city's base branch",
				StepFilesSwapped:    "the scaffold's CA files already hold the new CA",
				StepSecretSwitched:  "the issuer's CA Secret already holds the new CA",
				StepServerTrustsNew: "the SPIRE server already trusts the new CA",
			}[step]
			return fmt.Errorf("%w: %s", ErrCannotAbort, what)
		}
	}
	return nil
}

func keepCert(cert, dir string) ([]string, error) {
	data, err := os.ReadFile(cert)
	if err != nil {
		return nil, err
	}
	cs, err := pki.ParseCertificates(data)
	if err != nil || len(cs) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dst := dir + string(os.PathSeparator) + pki.SHA1Fingerprint(cs[0]) + ".crt.pem"
	return []string{dst}, os.WriteFile(dst, data, 0o600)
}
