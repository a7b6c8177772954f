package rotate

import (
	"fmt"
	"time"
)

// SPIRE 1.13's defaults for the two intervals that decide how long a moved
// agent's workloads go without SVIDs.
const (
	// DefaultCacheReload is the server's experimental.cache_reload_interval:
	// how often the default (full) entry cache is rebuilt from the datastore
	// (spire pkg/server/endpoints/endpoints.go defaultCacheReloadInterval;
	// doc/spire_server.md). The events-based cache (events_based_cache) is
	// off by default.
	DefaultCacheReload = 5 * time.Second
	// DefaultAgentSync is the agent's experimental.sync_interval (spire
	// pkg/agent/manager/config.go; doc/spire_agent.md).
	DefaultAgentSync = 5 * time.Second
	// ShortInterval is the value recommended for both to shorten the gap.
	ShortInterval = time.Second
)

// MoveWindow is the longest a pod's workloads go without an SVID after its
// agent re-attests under a new agent ID, by SPIRE's own intervals: the
// server's full entry cache is a snapshot (pkg/server/cache/entrycache/
// fullcache.go Build resolves node aliases for the agents the datastore
// held at the last reload), so until the next reload, at most cacheReload
// later, the new agent ID reaches no alias and the agent's sync returns
// none of its workload entries; the agent drops them, and gets them back at
// its first sync after the reload, at most one sync interval later (plus
// SPIRE's 10% jitter, pkg/common/backoff). SPIRE issue 2287 ("Cache miss
// in manager initialization for the 1st time agent") and 6257 ("Resolve
// node aliases synchronously during agent attestation") describe it; it
// ends only when SPIRE resolves aliases at attestation. Minting the SVID
// and the workload's next fetch come on top (the test bed measured them).
func MoveWindow(cacheReload, agentSync time.Duration) time.Duration {
	return cacheReload + agentSync*11/10
}

// Measured on the test bed (TestRotateZeroFailedFetches, 2 pods, SPIRE
// 1.13.3, a loaded 2-core machine, 4 runs each; README "Rotating the team
// CA"): the longest a moved agent's workload went without an SVID, from its
// re-attestation to its first good fetch after the failed ones.
const (
	measuredDefault = "6.5 s"
	measuredShort   = "1.5 s"
)

// MoveGap says what SPIRE does to a pod's workloads when its agent moves to
// its new leaf (a new agent ID, the leaf's fingerprint), which traffic it
// touches, and what shortens it. Every rotation moves every agent once.
type MoveGap struct {
	// Window is how long, with SPIRE's defaults.
	Window string `json:"window"`
	// Kept is the traffic that goes on; Failing the traffic that fails.
	Kept    string `json:"kept"`
	Failing string `json:"failing"`
	// Shorten are the settings that shrink the window, and what they cost.
	Shorten []Setting `json:"shorten"`
}

// Setting is one configuration change, who makes it, and where.
type Setting struct {
	Who    string `json:"who"`
	Where  string `json:"where"`
	Config string `json:"config"`
	Note   string `json:"note"`
}

func moveGap(roll string) *MoveGap {
	when := "After each pod's agent re-attests with its new leaf (phase 3, in place)"
	if roll == RollRestart {
		when = "After each restarted pod's agent attests with its new leaf (phase 3)"
	}
	return &MoveGap{
		Window: fmt.Sprintf("%s it has a new agent ID, which the SPIRE server's entry cache (the full cache, rebuilt every cache_reload_interval) does not know until its next reload; the agent's sync before then returns no workload entry, so the pod has no SVID until the agent's first sync after the reload: up to %v with SPIRE's defaults (cache_reload_interval %v, sync_interval %v; longest measured %s). SPIRE issues 2287 and 6257; spirepod cannot avoid it",
			when, MoveWindow(DefaultCacheReload, DefaultAgentSync).Round(100*time.Millisecond), DefaultCacheReload, DefaultAgentSync, measuredDefault),
		Kept:    "an Envoy already running: its SDS stream keeps the last secret it received, and Envoy serves with it until the agent sends the next",
		Failing: "one-shot fetches (`spire-agent api fetch`, a workload or an Envoy that starts in the window) get \"no identity issued\"",
		Shorten: []Setting{
			{Who: "platform team", Where: "SPIRE server config", Config: fmt.Sprintf(`server { experimental { cache_reload_interval = "%v" } }`, ShortInterval),
				Note: "a full cache rebuild from the datastore every second: cheap for a few thousand entries, costly for a very large server"},
			{Who: "your team", Where: "spire-agent-configmap.yaml agent.conf", Config: fmt.Sprintf(`agent { experimental { sync_interval = "%v" } }`, ShortInterval),
				Note: fmt.Sprintf("five times the agent's sync calls to the server; with both at %v: up to %v, longest measured %s",
					ShortInterval, MoveWindow(ShortInterval, ShortInterval).Round(100*time.Millisecond), measuredShort)},
		},
	}
}
