package project

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// A DNS-1123 label (namespaces, names of StatefulSets, teams) and a DNS-1123
// subdomain (pods, service accounts, host names) are what Kubernetes
// accepts as names. Kubernetes explains a refusal with its regular
// expression; nameProblem says it in plain words and suggests a name.

// notLabel is the error for s, a what that is not a DNS-1123 label, or nil.
func notLabel(what, s string) error {
	if len(validation.IsDNS1123Label(s)) == 0 {
		return nil
	}
	return fmt.Errorf("%q is not a valid %s: %s", s, what, nameProblem(s, validation.DNS1123LabelMaxLength, false))
}

// notSubdomain is the error for s, a what that is not a DNS-1123 subdomain.
func notSubdomain(what, s string) error {
	if len(validation.IsDNS1123Subdomain(s)) == 0 {
		return nil
	}
	return fmt.Errorf("%q is not a valid %s: %s", s, what, nameProblem(s, validation.DNS1123SubdomainMaxLength, true))
}

// nameProblem says what keeps s from being a Kubernetes name: lower-case
// letters, digits and '-' (and '.' between parts when dots), starting and
// ending with a letter or digit, at most max characters.
func nameProblem(s string, max int, dots bool) string {
	allowed := "lower-case letters, digits and '-'"
	if dots {
		allowed = "lower-case letters, digits, '-' and '.'"
	}
	var why []string
	if s == "" {
		return "it is empty; use " + allowed
	}
	if len(s) > max {
		why = append(why, fmt.Sprintf("it is %d characters long, the limit is %d", len(s), max))
	}
	upper, bad := false, map[rune]bool{}
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', dots && r == '.':
		default:
			bad[r] = true
		}
	}
	if upper {
		why = append(why, "it has upper-case letters")
	}
	if len(bad) > 0 {
		var rs []string
		for r := range bad {
			rs = append(rs, fmt.Sprintf("%q", r))
		}
		why = append(why, "it has "+strings.Join(sortedStrings(rs), ", "))
	}
	first, last := s[0], s[len(s)-1]
	if !alnum(first) || !alnum(last) {
		why = append(why, "it must start and end with a letter or digit")
	}
	msg := strings.Join(why, "; ") + "; use only " + allowed
	if sug := suggestName(s, max, dots); sug != "" && sug != s {
		msg += fmt.Sprintf(" (for example %q)", sug)
	}
	return msg
}

func alnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' }

// suggestName lower-cases s and replaces what Kubernetes refuses by '-'.
func suggestName(s string, max int, dots bool) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', dots && r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-.")
	if len(out) > max {
		out = strings.Trim(out[:max], "-.")
	}
	return out
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// Count is n and noun, plural when n is not 1: "1 pod", "2 pods", "0 pods".
// noun is the singular; plural adds "s" (or "es" after s, x, sh, ch; "ies"
// for a consonant and y).
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	switch {
	case strings.HasSuffix(noun, "s"), strings.HasSuffix(noun, "x"), strings.HasSuffix(noun, "sh"), strings.HasSuffix(noun, "ch"):
		return fmt.Sprintf("%d %ses", n, noun)
	case strings.HasSuffix(noun, "y") && len(noun) > 1 && !strings.ContainsRune("aeiou", rune(noun[len(noun)-2])):
		return fmt.Sprintf("%d %sies", n, noun[:len(noun)-1])
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
