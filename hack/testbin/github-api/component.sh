# Sourced by hack/testbin.sh: GitHub's own descriptions of its APIs, for the
# conformance tests of spirepod's GitHub client and the fake GitHub
# (internal/fakes/githubfake/conformance). Nothing is built: two npm packages
# are fetched with `npm pack` (the npm registry only), checked against the
# integrity pinned here, and their description files copied into $out.
#   @octokit/openapi         GitHub's REST OpenAPI descriptions (api.github.com, GHES 3.19)
#   @octokit/graphql-schema  GitHub's public GraphQL schema (SDL)
# The version names both pins; internal/fakes/githubfake/conformance names it too.
openapi_version=23.0.2
openapi_integrity=sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg==
graphql_version=15.26.1
graphql_integrity=sha512-RFDC2MpRBd4AxSRvUeBIVeBU7ojN/SxDfALUd7iVYOSeEK3gZaqR2MGOysj4Zh2xj2RY5fQAUT+Oqq7hWTraMA==
version=openapi-$openapi_version-graphql-$graphql_version
bins=""
assets="openapi/api.github.com.json openapi/ghes-3.19.json graphql/schema.graphql"

# integrity FILE: npm's integrity string (sha512, base64) of FILE.
integrity() {
  node -e 'const c=require("crypto"),f=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$1"
}

build() {
  command -v npm >/dev/null || { echo "testbin: github-api needs npm (apt-get install npm)" >&2; return 1; }
  local tmp="$out/.npm-pack"
  mkdir -p "$tmp" "$out/openapi" "$out/graphql"
  (cd "$tmp" && npm pack --silent "@octokit/openapi@$openapi_version" "@octokit/graphql-schema@$graphql_version" >/dev/null)
  local oa="$tmp/octokit-openapi-$openapi_version.tgz" gq="$tmp/octokit-graphql-schema-$graphql_version.tgz" got
  for pair in "$oa $openapi_integrity" "$gq $graphql_integrity"; do
    set -- $pair
    got=$(integrity "$1")
    if [ "$got" != "$2" ]; then
      echo "testbin: $(basename "$1") has integrity $got, pinned $2" >&2
      return 1
    fi
  done
  tar -xzf "$oa" -C "$tmp" package/generated/api.github.com.json package/generated/ghes-3.19.json
  mv "$tmp/package/generated/api.github.com.json" "$tmp/package/generated/ghes-3.19.json" "$out/openapi/"
  rm -rf "$tmp/package"
  tar -xzf "$gq" -C "$tmp" package/schema.graphql
  mv "$tmp/package/schema.graphql" "$out/graphql/"
  rm -rf "$tmp"
  rmdir "$out/bin"
}
