package pr

import (
	"path"

	"github.com/spirepod/spirepod/internal/project"
	"github.com/spirepod/spirepod/internal/registration"
)

// TrustListFile is the file of the city's trust list that holds the team's
// CA: the bundle itself, or <dir>/<team>.crt.pem in directory mode.
func TrustListFile(p *project.Project) string {
	tl := p.City.TrustList
	if tl.Mode == project.TrustListDirectory {
		return path.Join(tl.Path, p.Team+".crt.pem")
	}
	return tl.Path
}

// RegistrationFile is the team's registration file in the city for the
// project's format.
func RegistrationFile(p *project.Project) string {
	return path.Join(TeamPath(p), registration.File(p.Registration.Format))
}

// TrustListHolds reports whether a trust-list file holds the CA with this
// SHA-1 fingerprint (other blocks, comments and broken certificates are
// skipped, as they are another team's to fix).
func TrustListHolds(data []byte, sha1 string) bool { return bundleHas(data, sha1) }
