package githubfake

// Limits are the documented size limits of GitHub's APIs that the fake
// keeps. New starts with DefaultLimits (GitHub's numbers); a test may lower
// them to exercise a limit with small files, or switch on GraphQLMaxObjects.
type Limits struct {
	// ContentsMax: a file larger than this comes back from the contents API
	// (default and object media types) with content "" and encoding "none".
	// GitHub's description of "Get repository content"
	// (https://docs.github.com/rest/repos/contents#get-repository-content):
	// "Between 1-100 MB: ... the content field will be an empty string and
	// the encoding field will be "none"". 1 MB is taken as 1 MiB.
	ContentsMax int
	// BlobMax: above it the contents API and the blobs API refuse with 403
	// too_large. Same description: "Greater than 100 MB: This endpoint is
	// not supported"; "Get a blob" (https://docs.github.com/rest/git/blobs#get-a-blob):
	// "This endpoint supports blobs up to 100 megabytes in size."
	BlobMax int
	// BlobTextMax: GraphQL Blob.text is cut at this many bytes and
	// Blob.isTruncated is true ("Indicates whether the contents is
	// truncated", GitHub's GraphQL schema; GitHub cuts at 512,000 bytes).
	BlobTextMax int
	// TreeMaxEntries and TreeMaxBytes cut a recursive tree listing
	// (truncated: true). GitHub's description of "Get a tree"
	// (https://docs.github.com/rest/git/trees#get-a-tree): "The limit for
	// the tree array is 100,000 entries with a maximum size of 7 MB when
	// using the recursive parameter."
	TreeMaxEntries, TreeMaxBytes int
	// GraphQLMaxObjects, when > 0, makes a GraphQL query that selects more
	// Repository.object fields than this fail as GitHub fails a query it
	// cannot answer in time: 502 with "Something went wrong while executing
	// your query. This may be the result of a timeout…" ("Rate limits and
	// query limits for the GraphQL API", Timeouts:
	// https://docs.github.com/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api#timeouts).
	// Off by default: the size at which GitHub times out is not documented.
	GraphQLMaxObjects int
	// RateLimit is the primary rate limit per hour each resource (core,
	// graphql) reports in x-ratelimit-limit; "Rate limits for the REST API"
	// (https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api): 5,000 for a user.
	RateLimit int
}

// DefaultLimits are GitHub's.
func DefaultLimits() Limits {
	return Limits{ContentsMax: 1 << 20, BlobMax: 100 << 20, BlobTextMax: 512000, TreeMaxEntries: 100000, TreeMaxBytes: 7 << 20, RateLimit: 5000}
}

// SetLimits replaces the fake's limits.
func (s *Server) SetLimits(l Limits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = l
}

// Limits returns the fake's limits.
func (s *Server) Limits() Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}
