package city

import (
	"strings"

	"github.com/spirepod/spirepod/internal/registration"
)

// Codes of the city rules. They are stable: CI configurations, SARIF
// baselines and README anchors (#spd101) refer to them.
const (
	CodeAliasShared        = "SPD101" // a node-alias ID registered by more than one folder
	CodeAliasOutOfScope    = "SPD102" // an alias ID outside its folder's scope
	CodeParentOtherFolder  = "SPD103" // a workload parented to an alias another folder owns
	CodeWorkloadOutOfScope = "SPD104" // a workload ID outside its folder's namespace path
	CodePinNotTrusted      = "SPD105" // an alias pinned to a CA not on the trust list
	CodePinOtherTeam       = "SPD106" // an alias pinned to a CA another team put on the trust list
	CodeCNTwoCAs           = "SPD107" // one agent CN claimed under two CAs
	CodeCNTwoFolders       = "SPD108" // one agent CN and CA claimed by two folders
	CodeParentNowhere      = "SPD109" // a workload whose parent alias is registered nowhere
	CodeOutsideTeamFolder  = "SPD110" // a registration file outside any team folder
	CodeUnparsable         = "SPD111" // a registration file that does not parse
	CodeEntryIDOutOfScope  = "SPD112" // an entry_id outside its folder's namespace prefix
	CodeEntryIDShared      = "SPD113" // one entry_id in two folders
	CodeCSEName            = "SPD114" // a ClusterStaticEntry name outside the folder's prefix, or another folder's
	CodePower              = "SPD115" // an entry with admin, downstream or storeSVID
	CodeDNSName            = "SPD116" // an entry with a DNS name that is not the team's own
	CodeFederation         = "SPD117" // an entry that federates with another trust domain

	CodeLink         = "SPD501" // a symbolic link or submodule in a team folder or the trust list
	CodeOutsideRef   = "SPD502" // a kustomization that refers outside the team folder (remote, absolute, ..)
	CodeNoBuild      = "SPD503" // a team folder that does not build with kustomize
	CodeKind         = "SPD504" // an object of a kind a team folder may not hold
	CodeNamespace    = "SPD505" // an object outside the folder's namespace
	CodeShape        = "SPD506" // an object that grants or reaches more than the scaffold's
	CodePodSecurity  = "SPD507" // pods below Pod Security restricted
	CodeUnjudged     = "SPD508" // a file no modelled consumer reads
	CodeSecretInCity = "SPD509" // a private key or Secret in the city

	CodeNotCA           = "SPD301" // a trust-list certificate that is not a CA
	CodeNoKeyCertSign   = "SPD302" // keyUsage without keyCertSign
	CodeNotValid        = "SPD303" // expired or not yet valid
	CodeExpiresSoon     = "SPD304" // expires within --expiry-days
	CodeDuplicateCA     = "SPD305" // the same certificate twice
	CodeNotCertificate  = "SPD306" // a block that is not a certificate (a key, a malformed block)
	CodeOwnerUnknown    = "SPD307" // a certificate whose owner cannot be known
	CodeTrustListAbsent = "SPD308" // no trust list at the configured path
	CodeUnlisted        = "SPD309" // a directory-mode file its kustomization does not list
	CodeListedMissing   = "SPD310" // a kustomization entry whose file does not exist
	CodeOwnerConflict   = "SPD311" // owner comments that contradict each other or their block
	CodeOtherTeamsCA    = "SPD312" // a change that removes, replaces or re-owns another team's CA
	CodeLookAlikeCA     = "SPD313" // a CA with the subject or key ID of another owner's CA
	CodeTooManyCAs      = "SPD314" // more CAs for one owner than the limit

	CodeCNTemplate       = "SPD401" // an agent_path_template without .Fingerprint
	CodeServerUnparsable = "SPD402" // a server config that does not parse
	CodeServerPluginFile = "SPD403" // x509pop plugin data in plugin_data_file: not judged
	CodeControllerPrefix = "SPD404" // spire-controller-manager without entryIDPrefix
)

// Rule groups, in the order the text output shows them.
const (
	GroupRegistrations = "registration entries"
	GroupFolder        = "team folder contents"
	GroupOwnership     = "node aliases and ownership"
	GroupTrustList     = "trust list"
	GroupServer        = "server config"
)

// Rule documents one code: the README's rule table is this list.
type Rule struct {
	Code     string                `json:"code"`
	Severity registration.Severity `json:"severity"`
	Group    string                `json:"group"`
	// Title is what the rule checks, as a passing checklist line says it.
	Title string `json:"title"`
	Why   string `json:"why"`
	Fix   string `json:"fix"`
}

// Anchor is the rule's README anchor: #spd101.
func (r Rule) Anchor() string { return "#" + strings.ToLower(r.Code) }

const (
	sevE = registration.SeverityError
	sevW = registration.SeverityWarning
	sevN = registration.SeverityNote
)

var rules = []Rule{
	{registration.CodeBadSpiffeID, sevE, GroupRegistrations, "SPIFFE IDs parse", "spire-server refuses the entry (or the controller reports it only in status)", "write spiffe://<trust domain>/<path>, no query, fragment, or trailing slash"},
	{registration.CodeOtherTrustDomain, sevE, GroupRegistrations, "IDs are in the environment's trust domain", "the server of this environment never issues an ID of another trust domain", "use the trust domain of the environment (--env)"},
	{registration.CodeBadSelector, sevE, GroupRegistrations, "selectors are type:value", "a malformed selector never matches", "write type:value, e.g. unix:uid:101"},
	{registration.CodeBadFingerprint, sevE, GroupRegistrations, "CA fingerprints are 40 lowercase hex digits", "SPIRE matches the selector byte for byte: uppercase, colons or SHA-256 are accepted by entry create and never match", "`spirepod pki inspect` prints the SHA-1 in the exact form"},
	{registration.CodeBadUnixID, sevE, GroupRegistrations, "unix uid/gid selectors are numbers", "the unix attestor reports numeric IDs only", "use the number (e.g. unix:uid:101)"},
	{registration.CodeNoSelectors, sevE, GroupRegistrations, "every entry has selectors", "an entry without selectors matches nothing", "add the selectors the workload or agent presents"},
	{registration.CodeDuplicate, sevE, GroupRegistrations, "no entry is registered twice", "two identical entries confuse ownership and double the server's work", "keep one (a folder should hold one format's file)"},
	{registration.CodeAliasUnpinned, sevE, GroupRegistrations, "node aliases are pinned to a CA (x509pop:ca:fingerprint)", "without the pin any team on the trust list can mint the alias's common name and receive its workloads' SVIDs", "add x509pop:ca:fingerprint:<sha1 of your team CA>"},
	{registration.CodeNoClassName, sevE, GroupRegistrations, "ClusterStaticEntry objects carry className", "spire-controller-manager ignores objects of another class silently (the Helm chart watches <namespace>-<release> only)", "set spec.className, or declare the controller classless (--classless)"},
	{registration.CodeSpiffeIDNamespace, sevE, GroupRegistrations, "SpiffeID selector namespace is its own", "the registrar only registers a SpiffeID for pods of its own namespace", "set spec.selector.namespace to metadata.namespace"},
	{registration.CodeRegistrarRewrites, sevE, GroupRegistrations, "SpiffeID shapes survive the k8s-workload-registrar", "the registrar turns every selector into k8s:<value> and adds k8s:ns: no x509pop agent or unix workload ever matches", "register aliases and unix entries as entry-json or ClusterStaticEntry"},
	{registration.CodeBadCN, sevE, GroupRegistrations, "agent common names are 1 to 64 bytes", "cert-manager refuses longer common names, so the agent never gets a certificate", "shorten the StatefulSet or namespace name"},
	{registration.CodeBadEntryID, sevE, GroupRegistrations, "entry IDs are what SPIRE accepts", "spire-server refuses the entry", "use letters, digits, '.', '_' and '-', at most 255 bytes"},
	{registration.CodeDuplicateEntryID, sevE, GroupRegistrations, "each entry ID is used once", "spire-server keeps one entry and refuses the other; entry update overwrites one with the other", "give each entry its own entry_id"},

	{CodeAliasShared, sevE, GroupOwnership, "node-alias IDs are registered by one folder", "an agent receives every entry parented to any alias ID it matches: two teams sharing an ID receive each other's SVIDs, pinned or not (measured on SPIRE 1.13.3)", "use team-scoped aliases spiffe://<td>/ns/<namespace>/spire-agent-x509pop-<pod> (`spirepod init --naming namespaced`)"},
	{CodeAliasOutOfScope, sevE, GroupOwnership, "node-alias IDs are in their team's scope", "an alias outside spiffe://<td>/ns/<namespace>/ can collide with another team's; the guide's spiffe://<td>/spire-agent-x509pop-<pod> (a warning) is unique only while no other team uses the same StatefulSet name", "register the alias under spiffe://<td>/ns/<namespace>/"},
	{CodeParentOtherFolder, sevE, GroupOwnership, "workloads hang under their own folder's aliases", "a workload parented to another team's alias is handed to that team's agents", "parent the workload to an alias your folder registers"},
	{CodeWorkloadOutOfScope, sevE, GroupOwnership, "workload IDs are in their folder's namespace path", "an ID under another namespace impersonates that team's workloads", "use spiffe://<td>/ns/<namespace>/… of the folder's namespace"},
	{CodePinNotTrusted, sevE, GroupOwnership, "aliases are pinned to CAs on the trust list", "the server rejects every agent of an untrusted CA: the alias never matches", "merge the team's trust-ca PR first, or fix the fingerprint"},
	{CodePinOtherTeam, sevE, GroupOwnership, "aliases are pinned to their own team's CA", "pinning another team's CA lets that team's agents receive these workloads (or claims its agents)", "pin the CA your team put on the trust list"},
	{CodeCNTwoCAs, sevE, GroupOwnership, "each agent CN is claimed under one CA", "with a common-name agent_path_template both agents get the same agent ID and one receives the other's SVIDs", "agent CNs are team-scoped (<pod>.<namespace>); remove the copy"},
	{CodeCNTwoFolders, sevE, GroupOwnership, "each agent CN and CA is claimed by one folder", "two folders claiming the same agent split its workloads between teams", "keep the alias in the team's own folder only"},
	{CodeParentNowhere, sevE, GroupOwnership, "workload parents are node aliases of their own folder", "SPIRE hands an entry to every agent that can obtain its parent ID, down the chain: parented to another team's workload or agent ID it reaches that team's pods; parented to nothing it never reaches an agent", "parent the workload to a node alias the folder registers (pr spiffe-id does both)"},
	{CodeOutsideTeamFolder, sevW, GroupOwnership, "registration files are in team folders", "a file outside every team folder has no owner, so the ownership rules cannot judge it", "move it into the team's folder (the profile's teamPath)"},
	{CodeUnparsable, sevE, GroupOwnership, "registration files parse", "the platform's pipeline fails on the file (or applies part of it)", "fix the syntax at the line named"},
	{CodeEntryIDShared, sevE, GroupOwnership, "each entry ID is registered by one folder", "entry IDs are global on the server: the second folder's entry is refused, or with entry update overwrites the first", "give the entry an ID under the folder's own prefix spirepod.<namespace>."},
	{CodeCSEName, sevE, GroupOwnership, "ClusterStaticEntry names carry their folder's namespace", "ClusterStaticEntry objects are cluster-scoped: a name another folder uses replaces that team's entry when applied", "name it <namespace>-<name> (pr spiffe-id does)"},
	{CodePower, sevE, GroupOwnership, "entries carry no admin, downstream or storeSVID", "admin lets the workload manage every entry of the server; downstream gives it an intermediate CA of the whole trust domain; storeSVID hands its SVID to a platform SVIDStore", "remove the field; the platform registers such entries itself"},
	{CodeDNSName, sevE, GroupOwnership, "DNS names are the team's own", "an SVID with another team's host name passes host-name checks for that team's services", "use <service>.<namespace>, <service>.<namespace>.svc or <service>.<namespace>.svc.<cluster domain> of the folder's namespace"},
	{CodeFederation, sevE, GroupOwnership, "entries federate only where the platform allows", "federatesWith hands the workload other trust domains' bundles: the platform decides which trust domains a team may trust", "remove federatesWith, or ask the platform to allow the trust domain (--allow-federation)"},
	{CodeEntryIDOutOfScope, sevE, GroupOwnership, "entry IDs carry their folder's namespace", "entry IDs are global on the server: a team that takes another's ID blocks its entry create (AlreadyExists) or, when the platform loads with entry update, overwrites it", "prefix the entry_id with spirepod.<namespace>. (pr spiffe-id does) or <namespace>."},

	{CodeLink, sevE, GroupFolder, "team folders and the trust list hold no symbolic links or submodules", "a checkout and kustomize follow a link to content this check never reads", "commit the file itself"},
	{CodeOutsideRef, sevE, GroupFolder, "kustomizations refer only inside their team folder", "a remote base or a path outside the folder is fetched or read when the platform builds it, and nobody reviewed it in this folder", "copy what you need into the folder"},
	{CodeNoBuild, sevE, GroupFolder, "team folders build with kustomize", "the platform applies the folder with kubectl apply -k: a folder that does not build applies nothing, and cannot be judged", "run `kustomize build` (or `kubectl kustomize`) on the folder and fix what it says"},
	{CodeKind, sevE, GroupFolder, "team folders hold only kinds spirepod judges", "any other kind (ClusterSPIFFEID, ClusterFederatedTrustDomain, a webhook, a CRD) reaches the cluster unjudged; some register identities for every team", "keep the scaffold's kinds and the registration entries; ask the platform for anything else"},
	{CodeNamespace, sevE, GroupFolder, "namespaced objects are in the folder's namespace", "an object in another namespace changes another team's resources", "set the folder's namespace (the kustomization's namespace: does)"},
	{CodeShape, sevE, GroupFolder, "objects grant and reach what the scaffold's do", "a wider Role, a binding to others, another team's issuer or CA Secret reach beyond the team", "keep the objects `spirepod init` renders"},
	{CodePodSecurity, sevE, GroupFolder, "pods meet Pod Security restricted", "a privileged pod, host namespaces or host paths reach the node every team's pods share", "keep the scaffold's securityContext (judged with the API server's own PodSecurity checks)"},
	{CodeUnjudged, sevE, GroupFolder, "every file in a team folder is read by a modelled consumer", "a file neither the kustomize build nor spire-server reads cannot be judged; the platform's pipeline may still load it", "list it in the kustomization, or remove it"},
	{CodeSecretInCity, sevE, GroupFolder, "no private key or Secret is in the city", "everyone who can read the city repository can read it", "remove it and regenerate the key (`spirepod pki rotate --emergency` for a team CA)"},

	{CodeNotCA, sevE, GroupTrustList, "trust-list certificates are CAs", "SPIRE rejects every agent a non-CA signed (x509: invalid signature: parent certificate cannot sign this kind of certificate)", "add the team CA (basicConstraints CA:TRUE), not a leaf (`spirepod pki gen`)"},
	{CodeNoKeyCertSign, sevE, GroupTrustList, "trust-list CAs may sign certificates (keyCertSign)", "Go refuses chains through a CA whose keyUsage lacks keyCertSign", "re-create the CA with keyUsage digitalSignature, keyCertSign, cRLSign"},
	{CodeNotValid, sevE, GroupTrustList, "trust-list CAs are valid now", "agents of an expired CA cannot attest", "replace the CA and remove the expired one"},
	{CodeExpiresSoon, sevW, GroupTrustList, "trust-list CAs do not expire within --expiry-days", "every agent of the team stops attesting when the CA expires", "add the successor CA (and its pin) before then"},
	{CodeDuplicateCA, sevW, GroupTrustList, "each CA is on the trust list once", "a second copy adds nothing and makes ownership ambiguous", "remove the later copy"},
	{CodeNotCertificate, sevE, GroupTrustList, "the trust list holds certificates only", "a private key there is leaked; a malformed CERTIFICATE makes SPIRE refuse the whole bundle; other blocks are skipped", "remove the block (and regenerate a leaked CA)"},
	{CodeOwnerUnknown, sevN, GroupTrustList, "each CA's owner is known", "without an owner, aliases pinned to another team's CA (SPD106) cannot be detected", "re-add it with `spirepod pr trust-ca` (owner comment) or commit it with the owner in the message"},
	{CodeTrustListAbsent, sevW, GroupTrustList, "the trust list is where the profile says", "without it, pins cannot be checked", "set --trust-list-path/--trust-list-mode (or the profile's trustList)"},
	{CodeUnlisted, sevW, GroupTrustList, "every trust-list file is in the directory's kustomization", "the server never sees a file the generator does not list", "list it under the generator's files:"},
	{CodeListedMissing, sevE, GroupTrustList, "every file the kustomization lists exists", "kustomize build fails, and with it the server's manifests", "add the file or remove the entry"},
	{CodeOwnerConflict, sevW, GroupTrustList, "owner comments agree with their certificates", "a comment naming another certificate, or two owners for one, makes ownership a guess", "keep one `# spirepod: team=… namespace=… sha1=…` line directly above its own block"},

	{CodeOtherTeamsCA, sevE, GroupTrustList, "a change touches only one team's CAs", "a team may add or replace only its own CA: removing or re-owning another team's stops its agents, or moves its pins", "leave other teams' blocks and owner comments as they are"},
	{CodeLookAlikeCA, sevE, GroupTrustList, "no CA shares a subject or key ID with another owner's", "Go's verifier tries every trusted CA whose subject matches the leaf's issuer and gives up after 100 signature checks: look-alikes of another team's CA make its agents' leaves fail (measured on spire-server)", "give the CA its own subject (`spirepod pki gen` does)"},
	{CodeTooManyCAs, sevE, GroupTrustList, "each owner has at most --max-cas-per-team CAs", "a rotation needs two; more only lengthen the list every attestation searches", "remove the CAs the team no longer uses"},

	{CodeCNTemplate, sevE, GroupServer, "x509pop agent IDs use the certificate fingerprint", "with a common-name agent_path_template another trusted CA's leaf with the same CN gets the same agent ID and receives the victim's SVIDs until the entry cache refreshes (measured 4-5 s)", "drop agent_path_template (the default is /{{ .PluginName }}/{{ .Fingerprint }}) or include {{ .Fingerprint }}"},
	{CodeServerUnparsable, sevW, GroupServer, "server configs parse", "an unreadable config cannot be judged (and spire-server will not start with it)", "fix the HCL at the line named"},
	{CodeControllerPrefix, sevE, GroupServer, "spire-controller-manager keeps to its own entries (entryIDPrefix)", "without entryIDPrefix the controller treats every server entry as its own and deletes the ones it did not declare: every entry-json team's entries (measured)", "set entryIDPrefix in the controller's config (and keep teams' entry IDs outside it)"},
	{CodeServerPluginFile, sevN, GroupServer, "x509pop plugin data is inline", "plugin_data_file points outside the repository view: its agent_path_template is not judged", "check that file's agent_path_template by hand"},
}

// Rules lists every rule, in code order within each group.
func Rules() []Rule { return append([]Rule(nil), rules...) }

// Groups lists the rule groups in display order.
func Groups() []string {
	return []string{GroupRegistrations, GroupFolder, GroupOwnership, GroupTrustList, GroupServer}
}
