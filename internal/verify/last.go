package verify

import (
	"fmt"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/pki"
	"github.com/spirepod/spirepod/internal/project"
)

// States of the last verification, as CheckLast judges its record.
const (
	// LastVerified: a success for this namespace, kube context, team CA and
	// SPIFFE ID. The only state in which step 7 is in place.
	LastVerified = "verified"
	// LastNever: no record.
	LastNever = "never"
	// LastUnreadable: the record cannot be read (Err).
	LastUnreadable = "unreadable"
	// LastOtherNamespace, LastOtherContext, LastOtherCA: the record was made
	// for another namespace, on another kube context, or with another team
	// CA (or does not say which); it proves nothing about this one.
	LastOtherNamespace = "other-namespace"
	LastOtherContext   = "other-context"
	LastOtherCA        = "other-ca"
	// LastOtherID: a success, of another SPIFFE ID than spirepod.yaml's now.
	LastOtherID = "other-id"
	// LastFailed: the last verification failed (Record.Outcome says how).
	LastFailed = "failed"
)

// Last is the last verification judged against what counts now.
type Last struct {
	State string
	// Status is the mark `spirepod status` gives it: ok, to do, warn or fail.
	Status checklist.Status
	// Record is the last verification (nil when never made or unreadable).
	Record *Record
	Err    error
	// Message says what the record shows; Fix what to run ("" when verified).
	Message, Fix string
}

// Verified says step 7 is in place: the last verification succeeded for
// this namespace, context, team CA and expected ID.
func (l Last) Verified() bool { return l.State == LastVerified }

// CheckLast reads p's record of the last verification and judges it: it
// counts only for p's namespace, the kube context kubeContext ("" when none
// is configured: any), p's team CA as it is now, and p's workload SPIFFE
// ID. Read-only: `spirepod status` and `spirepod up` ask it.
func CheckLast(p *project.Project, kubeContext string) Last {
	rec, err := LoadRecord(p.Dir)
	ca := pki.LoadTeamCA(pki.TeamCAOptions{CertPath: p.Path(p.Paths.CACert)}).Cert
	again := "`spirepod verify`"
	switch {
	case err != nil:
		return Last{State: LastUnreadable, Status: checklist.Warn, Err: err, Message: err.Error(), Fix: "run `spirepod verify` again"}
	case rec == nil:
		return Last{State: LastNever, Status: checklist.Todo, Message: "never verified", Fix: again}
	case rec.Namespace != p.Namespace:
		return Last{State: LastOtherNamespace, Status: checklist.Todo, Record: rec, Fix: again,
			Message: fmt.Sprintf("the last verification was of namespace %s, not %s", rec.Namespace, p.Namespace)}
	case kubeContext != "" && rec.Context != kubeContext:
		return Last{State: LastOtherContext, Status: checklist.Todo, Record: rec, Fix: again,
			Message: fmt.Sprintf("the last verification was on context %q, not %q", rec.Context, kubeContext)}
	case ca != nil && rec.CASHA1 != pki.SHA1Fingerprint(ca):
		msg := "the last verification was made with another team CA (the CA was replaced since)"
		if rec.CASHA1 == "" {
			msg = "the last verification does not say which team CA it was made with"
		}
		return Last{State: LastOtherCA, Status: checklist.Todo, Record: rec, Message: msg, Fix: again}
	case rec.Outcome == OutcomeSuccess && rec.Expected != p.WorkloadSpiffeID():
		return Last{State: LastOtherID, Status: checklist.Warn, Record: rec, Fix: again,
			Message: fmt.Sprintf("verified %s, but spirepod.yaml now expects %s", rec.Expected, p.WorkloadSpiffeID())}
	case rec.Outcome == OutcomeSuccess:
		return Last{State: LastVerified, Status: checklist.OK, Record: rec,
			Message: fmt.Sprintf("%s at %s", rec.Expected, rec.Time.UTC().Format(time.RFC3339))}
	}
	l := Last{State: LastFailed, Status: checklist.Fail, Record: rec, Fix: again,
		Message: fmt.Sprintf("%s at %s", rec.Outcome, rec.Time.UTC().Format(time.RFC3339))}
	if rec.Message != "" {
		l.Message += ": " + rec.Message
	}
	if len(rec.Diagnoses) > 0 {
		d := rec.Diagnoses[0]
		l.Message += fmt.Sprintf(" (stage %s: %s)", d.Stage, d.Summary)
		if d.Fix != "" {
			l.Fix = d.Fix
		}
	}
	return l
}
