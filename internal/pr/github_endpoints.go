package pr

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// APIEndpoints returns the REST API root (ending in a slash) and the GraphQL
// endpoint of a GitHub host, as GitHub documents them:
//
//   - github.com: https://api.github.com/ and https://api.github.com/graphql
//     ("Getting started with the REST API", "Forming calls with GraphQL").
//   - <tenant>.ghe.com, GitHub Enterprise Cloud with data residency:
//     https://api.<tenant>.ghe.com/ and https://api.<tenant>.ghe.com/graphql
//     ("Network details for GHE.com",
//     https://docs.github.com/enterprise-cloud@latest/admin/data-residency/network-details-for-ghecom).
//   - any other host, GitHub Enterprise Server: https://HOST/api/v3/ and
//     https://HOST/api/graphql
//     (https://docs.github.com/enterprise-server@latest/rest/quickstart,
//     https://docs.github.com/enterprise-server@latest/graphql/guides/forming-calls-with-graphql#the-graphql-endpoint).
//
// host is a host name, optionally with a port (city.host, GH_HOST); "" is
// github.com. A URL or a path is refused: the API roots follow from the host.
func APIEndpoints(host string) (rest, graphql *url.URL, err error) {
	h := strings.ToLower(strings.TrimSpace(host))
	if h == "" {
		h = "github.com"
	}
	if strings.Contains(h, "/") || strings.Contains(h, "@") || strings.Contains(h, "?") {
		return nil, nil, fmt.Errorf("GitHub host %q: give a host name such as github.com, <tenant>.ghe.com or github.example.com, not a URL", host)
	}
	name := h
	if n, _, err := net.SplitHostPort(h); err == nil {
		name = n
	}
	if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return nil, nil, fmt.Errorf("GitHub host %q is not a host name", host)
	}
	switch {
	case name == "github.com" || name == "api.github.com":
		rest, graphql = mustURL("https://api.github.com/"), mustURL("https://api.github.com/graphql")
	case strings.HasSuffix(name, ".ghe.com"):
		tenant := strings.TrimPrefix(strings.TrimSuffix(name, ".ghe.com"), "api.")
		if tenant == "" || strings.Contains(tenant, ".") {
			return nil, nil, fmt.Errorf("GitHub host %q: a GHE.com host is <tenant>.ghe.com", host)
		}
		api := "api." + tenant + ".ghe.com"
		rest, graphql = mustURL("https://"+api+"/"), mustURL("https://"+api+"/graphql")
	default:
		rest, graphql = mustURL("https://"+h+"/api/v3/"), mustURL("https://"+h+"/api/graphql")
	}
	return rest, graphql, nil
}

// IsGitHubCloud reports whether host is github.com or a GHE.com tenant
// (GitHub-hosted, tokens from GH_TOKEN), not GitHub Enterprise Server.
func IsGitHubCloud(host string) bool {
	h := strings.ToLower(strings.TrimSpace(host))
	if n, _, err := net.SplitHostPort(h); err == nil {
		h = n
	}
	return h == "" || h == "github.com" || h == "api.github.com" || strings.HasSuffix(h, ".ghe.com")
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
