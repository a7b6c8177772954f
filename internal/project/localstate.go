package project

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spirepod/spirepod/internal/atomicfile"
)

// CityCheckoutFile records the local city checkout that `--local` last
// used, in the scaffold's local state (git-ignored: a path on this
// machine), so `status` and `pr status` read the team's branches from it.
const CityCheckoutFile = "city-checkout.json"

// CityCheckout is the content of .spirepod/city-checkout.json.
type CityCheckout struct {
	// Dir is the checkout's absolute path.
	Dir string `json:"dir"`
	// Time is when a pull request branch was last made there.
	Time time.Time `json:"time"`
}

// SaveCityCheckout records dir as the scaffold's local city checkout.
func SaveCityCheckout(p *Project, dir string, now time.Time) error {
	data, err := json.MarshalIndent(CityCheckout{Dir: dir, Time: now.UTC()}, "", "  ")
	if err != nil {
		return err
	}
	state := filepath.Join(p.Dir, StateDir)
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(state, CityCheckoutFile), append(data, '\n'), atomicfile.Options{Perm: 0o644})
}

// LoadCityCheckout reads the recorded checkout; nil, nil when there is none.
func LoadCityCheckout(p *Project) (*CityCheckout, error) {
	data, err := os.ReadFile(filepath.Join(p.Dir, StateDir, CityCheckoutFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c CityCheckout
	if err := json.Unmarshal(data, &c); err != nil || c.Dir == "" {
		return nil, nil // unreadable: as if none was recorded
	}
	return &c, nil
}
