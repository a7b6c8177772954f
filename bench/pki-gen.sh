#!/usr/bin/env bash
# Times `spirepod pki gen` (built binary, fresh scaffold directory each run)
# against the openssl one-liner that makes an equivalent P-256 CA, both as
# whole processes, alternating runs. Prints medians and the ratio.
#   bench/pki-gen.sh [RUNS]   (default 21)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
runs=${1:-21}
command -v openssl >/dev/null || { echo "openssl not on PATH" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build_spirepod "$work/spirepod"

# One scaffold made by `spirepod init` (its CA files are empty placeholders), copied per run.
"$work/spirepod" init --team bench --namespace team-bench "$work/tmpl" >/dev/null 2>&1

: > "$work/a"; : > "$work/b"
for i in $(seq "$runs"); do
  cp -r "$work/tmpl" "$work/sp$i"
  mkdir -p "$work/os$i"
  t0=$(now_ns)
  "$work/spirepod" pki gen --dir "$work/sp$i" >/dev/null 2>&1
  t1=$(now_ns); echo $((t1 - t0)) >> "$work/a"
  t0=$(now_ns)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=bench/CN=bench x509pop agent CA" \
    -addext basicConstraints=critical,CA:TRUE,pathlen:0 \
    -addext keyUsage=critical,digitalSignature,keyCertSign,cRLSign \
    -keyout "$work/os$i/agent-x509pop.key.pem" -out "$work/os$i/agent-x509pop.crt.pem" >/dev/null 2>&1
  t1=$(now_ns); echo $((t1 - t0)) >> "$work/b"
  test -s "$work/sp$i/certs/secret/agent-x509pop.key.pem" && test -s "$work/os$i/agent-x509pop.key.pem"
done
a=$(median < "$work/a"); b=$(median < "$work/b")
echo "spirepod pki gen: median $(ms "$a") ms over $runs runs"
echo "openssl req -x509: median $(ms "$b") ms over $runs runs"
echo "ratio spirepod/openssl: $(ratio "$a" "$b")"
