package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/spirepod/spirepod/internal/checklist"
	"github.com/spirepod/spirepod/internal/project"
)

// Rule IDs, stable: they appear in `pki inspect -o json` and in tests.
const (
	RuleCABasicConstraints   = "ca-basic-constraints"
	RuleCAKeyCertSign        = "ca-keycertsign"
	RuleCADigitalSignature   = "ca-digitalsignature"
	RuleKeyAlgorithm         = "key-algorithm"
	RuleRSASize              = "rsa-size"
	RuleKeyMatches           = "key-matches"
	RuleValidity             = "validity"
	RuleLifetime90d          = "lifetime-90d"
	RuleLeafDigitalSignature = "leaf-digitalsignature"
	RuleCNLength             = "cn-length"
	RuleCNForm               = "cn-form"
	RuleChainsToCA           = "chains-to-ca"
)

// SPIRE's own words for the rejections inspect predicts (spire-server
// v1.13, x509pop), so a user can match them to a server log.
const (
	SPIREMsgNotCA              = `x509: certificate signed by unknown authority (possibly because of "x509: invalid signature: parent certificate cannot sign this kind of certificate" ...)`
	SPIREMsgNoDigitalSignature = "unable to generate challenge: certificate not intended for digital signature use"
	SPIREMsgExpired            = "x509: certificate has expired or is not yet valid"
)

func result(group, id, name string, st checklist.Status, msg, hint string) checklist.Result {
	return checklist.Result{Group: group, ID: id, Name: name, Status: st, Message: msg, Hint: hint}
}

// InspectCA checks a team CA certificate as the SPIRE server and
// cert-manager will use it. key may be nil (key-matches is then skipped).
func InspectCA(group string, ca *x509.Certificate, key crypto.Signer, now time.Time) []checklist.Result {
	var rs []checklist.Result
	add := func(r checklist.Result) { rs = append(rs, r) }

	// basicConstraints CA:TRUE
	if ca.BasicConstraintsValid && ca.IsCA {
		add(result(group, RuleCABasicConstraints, "basicConstraints CA:TRUE", checklist.OK, "", ""))
	} else {
		add(result(group, RuleCABasicConstraints, "basicConstraints CA:TRUE", checklist.Fail,
			"this certificate is not a CA; the SPIRE server rejects every agent it issued: "+SPIREMsgNotCA,
			"make a proper CA with `spirepod pki gen`"))
	}

	// keyCertSign: only checked by Go when key usage is present.
	switch {
	case ca.KeyUsage == 0:
		add(result(group, RuleCAKeyCertSign, "keyUsage allows certificate signing", checklist.OK,
			"no keyUsage extension: Go accepts the CA for signing", ""))
	case ca.KeyUsage&x509.KeyUsageCertSign != 0:
		add(result(group, RuleCAKeyCertSign, "keyUsage allows certificate signing", checklist.OK, "", ""))
	default:
		add(result(group, RuleCAKeyCertSign, "keyUsage allows certificate signing", checklist.Fail,
			"keyUsage lacks keyCertSign; the SPIRE server rejects every agent it issued: "+SPIREMsgNotCA,
			"re-create the CA with `spirepod pki gen --force` (keyUsage digitalSignature, keyCertSign, cRLSign)"))
	}

	// The guide asks for digital signature on the CA; SPIRE does not check it.
	if ca.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
		add(result(group, RuleCADigitalSignature, "keyUsage has digital signature (the guide asks for it)", checklist.OK, "", ""))
	} else {
		add(result(group, RuleCADigitalSignature, "keyUsage has digital signature (the guide asks for it)", checklist.Warn,
			"the guide asks for a CA with digital signature; SPIRE itself does not check it on the CA",
			"`spirepod pki gen` includes digitalSignature, keyCertSign and cRLSign"))
	}

	rs = append(rs, inspectKeyAlgorithm(group, ca)...)
	rs = append(rs, inspectKeyMatch(group, ca, key))
	rs = append(rs, inspectValidity(group, ca, now, "the SPIRE server rejects agents issued by it: "+SPIREMsgExpired,
		"make a new CA with `spirepod pki gen --force` and put it on the trust list"))

	// Remaining lifetime.
	left := ca.NotAfter.Sub(now)
	switch {
	case now.Before(ca.NotBefore) || left <= 0:
		add(result(group, RuleLifetime90d, "more than 90 days left", checklist.Skipped, "the certificate is not valid now (see validity)", ""))
	case left < LifetimeWarning:
		add(result(group, RuleLifetime90d, "more than 90 days left", checklist.Warn,
			fmt.Sprintf("the CA expires in %d days (%s); every agent stops attesting then", int(left.Hours()/24), ca.NotAfter.UTC().Format(time.RFC3339)),
			"rotate it before then with `spirepod pki rotate` (the new CA is trusted next to this one while the agents move)"))
	default:
		add(result(group, RuleLifetime90d, "more than 90 days left", checklist.OK,
			fmt.Sprintf("%d days left", int(left.Hours()/24)), ""))
	}
	return rs
}

// LeafOptions are what an agent certificate is judged against.
type LeafOptions struct {
	// Group names the checks.
	Group string
	// Intermediates follow the leaf in its file.
	Intermediates []*x509.Certificate
	// CA is the team CA; nil skips chains-to-ca.
	CA *x509.Certificate
	// Key is the leaf's private key; nil skips key-matches.
	Key crypto.Signer
	Now time.Time
	// CNs are the agent common names of the scaffold's pods; empty accepts
	// either naming form (project.ParseAgentCN).
	CNs []string
}

// InspectLeaf checks an agent certificate as SPIRE's x509pop server plugin
// will, and its common name against the names the node aliases select.
func InspectLeaf(leaf *x509.Certificate, o LeafOptions) []checklist.Result {
	group, ca, key, now := o.Group, o.CA, o.Key, o.Now
	intermediates := o.Intermediates
	var rs []checklist.Result
	add := func(r checklist.Result) { rs = append(rs, r) }

	if leaf.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
		add(result(group, RuleLeafDigitalSignature, "keyUsage has digital signature", checklist.OK, "", ""))
	} else {
		add(result(group, RuleLeafDigitalSignature, "keyUsage has digital signature", checklist.Fail,
			"the SPIRE server will refuse this agent: "+SPIREMsgNoDigitalSignature,
			`list "digital signature" in the Certificate's usages (only "client auth" drops it)`))
	}
	rs = append(rs, inspectKeyAlgorithm(group, leaf)...)

	cn := leaf.Subject.CommonName
	if len(cn) <= project.MaxCNBytes {
		add(result(group, RuleCNLength, "common name within 64 bytes", checklist.OK, fmt.Sprintf("%d bytes", len(cn)), ""))
	} else {
		add(result(group, RuleCNLength, "common name within 64 bytes", checklist.Fail,
			fmt.Sprintf("common name %q is %d bytes; cert-manager refuses more than %d", cn, len(cn), project.MaxCNBytes),
			"use a shorter StatefulSet name (or namespace)"))
	}
	const formName = "common name is an agent name the node aliases select"
	issueHint := "issue agent certificates with `spirepod pki issue --pod NAME` or the scaffold's gen-cert"
	switch {
	case len(o.CNs) > 0 && slices.Contains(o.CNs, cn):
		add(result(group, RuleCNForm, formName, checklist.OK, "this scaffold's "+cn, ""))
	case len(o.CNs) > 0:
		add(result(group, RuleCNForm, formName, checklist.Fail,
			fmt.Sprintf("common name %q is none of this scaffold's agent names (%s…); no node alias selector x509pop:subject:cn matches it", cn, o.CNs[0]),
			issueHint))
	default:
		a, err := project.ParseAgentCN(cn)
		if err != nil {
			add(result(group, RuleCNForm, formName, checklist.Fail,
				fmt.Sprintf("common name %q: %v; the node alias selector x509pop:subject:cn will not match it", cn, err), issueHint))
		} else if a.Namespace != "" {
			add(result(group, RuleCNForm, formName, checklist.OK, "pod "+a.Pod+" in namespace "+a.Namespace, ""))
		} else {
			add(result(group, RuleCNForm, formName, checklist.OK, "pod "+a.Pod+" (guide naming)", ""))
		}
	}

	if ca == nil {
		add(result(group, RuleChainsToCA, "chains to the team CA", checklist.Skipped,
			"no team CA to check against", "pass --ca FILE or run inside a scaffold"))
	} else {
		pool := x509.NewCertPool()
		for _, c := range intermediates {
			pool.AddCert(c)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		// The same options SPIRE's x509pop server uses.
		_, err := leaf.Verify(x509.VerifyOptions{Intermediates: pool, Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err == nil {
			add(result(group, RuleChainsToCA, "chains to the team CA", checklist.OK, ca.Subject.String(), ""))
		} else {
			add(result(group, RuleChainsToCA, "chains to the team CA", checklist.Fail,
				"the SPIRE server will say: x509pop: certificate verification failed: "+err.Error(),
				"issue the certificate from the team CA whose certificate is on the server's trust list"))
		}
	}
	rs = append(rs, inspectValidity(group, leaf, now, "the SPIRE server will say: "+SPIREMsgExpired,
		"issue a fresh certificate (restart the pod, or `spirepod pki issue`)"))
	if key != nil {
		rs = append(rs, inspectKeyMatch(group, leaf, key))
	}
	return rs
}

func inspectKeyAlgorithm(group string, c *x509.Certificate) []checklist.Result {
	var rs []checklist.Result
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		rs = append(rs,
			result(group, RuleKeyAlgorithm, "key is RSA or ECDSA", checklist.OK, describeKey(k), ""),
			result(group, RuleRSASize, "RSA key size", checklist.Skipped, "not an RSA key", ""))
	case *rsa.PublicKey:
		rs = append(rs, result(group, RuleKeyAlgorithm, "key is RSA or ECDSA", checklist.OK, describeKey(k), ""))
		bits := k.N.BitLen()
		switch {
		case bits > MaxRSABits:
			rs = append(rs, result(group, RuleRSASize, "RSA key size", checklist.Fail,
				fmt.Sprintf("RSA key of %d bits; Go (SPIRE, cert-manager) refuses keys over %d bits", bits, MaxRSABits),
				"use rsa-4096 or ec-p256"))
		case bits < MinRSABits:
			rs = append(rs, result(group, RuleRSASize, "RSA key size", checklist.Fail,
				fmt.Sprintf("RSA key of %d bits is below %d", bits, MinRSABits), "use rsa-2048 or larger, or ec-p256"))
		default:
			rs = append(rs, result(group, RuleRSASize, "RSA key size", checklist.OK, fmt.Sprintf("%d bits", bits), ""))
		}
	default:
		rs = append(rs,
			result(group, RuleKeyAlgorithm, "key is RSA or ECDSA", checklist.Fail,
				fmt.Sprintf("%s key; SPIRE x509pop only supports RSA and ECDSA", c.PublicKeyAlgorithm),
				"use an ECDSA P-256 or RSA key"),
			result(group, RuleRSASize, "RSA key size", checklist.Skipped, "not an RSA key", ""))
	}
	return rs
}

func inspectKeyMatch(group string, c *x509.Certificate, key crypto.Signer) checklist.Result {
	if key == nil {
		return result(group, RuleKeyMatches, "private key matches the certificate", checklist.Skipped, "no private key given", "")
	}
	if KeyMatches(c, key) {
		return result(group, RuleKeyMatches, "private key matches the certificate", checklist.OK, "", "")
	}
	return result(group, RuleKeyMatches, "private key matches the certificate", checklist.Fail,
		"the private key is not the certificate's; cert-manager would sign certificates nothing verifies",
		"pair the certificate with its own key")
}

func inspectValidity(group string, c *x509.Certificate, now time.Time, consequence, hint string) checklist.Result {
	const name = "inside its validity period"
	switch {
	case now.Before(c.NotBefore):
		return result(group, RuleValidity, name, checklist.Fail,
			fmt.Sprintf("not valid before %s; %s", c.NotBefore.UTC().Format(time.RFC3339), consequence),
			"check the clock, or wait until the certificate becomes valid")
	case now.After(c.NotAfter):
		return result(group, RuleValidity, name, checklist.Fail,
			fmt.Sprintf("expired %s; %s", c.NotAfter.UTC().Format(time.RFC3339), consequence), hint)
	}
	return result(group, RuleValidity, name, checklist.OK, "until "+c.NotAfter.UTC().Format(time.RFC3339), "")
}
