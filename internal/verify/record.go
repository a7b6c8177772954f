package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spirepod/spirepod/internal/atomicfile"
	"github.com/spirepod/spirepod/internal/project"
)

// RecordDir is the scaffold's directory for local state; it ignores itself in git.
const RecordDir = project.StateDir

// RecordFile is the last verification, relative to the scaffold.
const RecordFile = RecordDir + "/last-verify.json"

// Outcomes of a verification.
const (
	OutcomeSuccess = "success"
	OutcomeWrongID = "wrong-id"
	OutcomeTimeout = "timeout"
	OutcomeError   = "error"
)

// Record is what `spirepod verify` remembers for `spirepod status`.
type Record struct {
	Time      time.Time `json:"time"`
	Context   string    `json:"context,omitempty"`
	Namespace string    `json:"namespace"`
	// CASHA1 is the team CA the scaffold had when verify ran: a record of
	// another CA proves nothing about this one.
	CASHA1    string      `json:"caSHA1,omitempty"`
	Expected  string      `json:"expected"`
	Outcome   string      `json:"outcome"`
	Message   string      `json:"message,omitempty"`
	Pods      []PodResult `json:"pods,omitempty"`
	Diagnoses []Diagnosis `json:"diagnoses,omitempty"`
}

// SaveRecord writes dir/.spirepod/last-verify.json atomically, and a
// .gitignore that keeps the directory out of git.
func SaveRecord(dir string, r *Record) error {
	d := filepath.Join(dir, RecordDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("save verification record: %w", err)
	}
	gi := filepath.Join(d, ".gitignore")
	if _, err := os.Stat(gi); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(gi, []byte("# local state of spirepod; not for git\n*\n"), atomicfile.Options{Perm: 0o644}); err != nil {
			return fmt.Errorf("save verification record: %w", err)
		}
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, filepath.FromSlash(RecordFile)), append(data, '\n'), atomicfile.Options{Perm: 0o644}); err != nil {
		return fmt.Errorf("save verification record: %w", err)
	}
	return nil
}

// LoadRecord reads the last verification; (nil, nil) when there is none.
func LoadRecord(dir string) (*Record, error) {
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(RecordFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", RecordFile, err)
	}
	return &r, nil
}
