#!/usr/bin/env bash
# How the cost of each command grows with the number of pods. For each size
# (replicas): `spirepod init`, `pr spiffe-id --dry-run` (no GitHub token: the
# time is rendering, validation and the diff), `status` (no cluster, no
# token: the local checks), `city check` on a city made by `pr trust-ca
# --local` and `pr spiffe-id --local` (both branches merged), and, with
# --diff, `spirepod diff` against the real test bed (kube-apiserver with
# cert-manager's CRDs; needs `make testbin`). Each is a whole process, median
# of RUNS runs, wall clock and CPU time (user+sys, from /usr/bin/time: the
# steadier figure on a shared machine); then, per command, the ratio of the
# CPU medians between consecutive sizes and that ratio per 10x of pods
# (linear cost: 10; quadratic: 100; a fixed start-up cost pulls it below 10).
#   bench/scale.sh [--runs N] [--sizes "10 100 1000 5000"] [--diff] [--bin PATH]
# --bin times another build (e.g. an older release) instead of this tree's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
runs=5
sizes="10 100 1000 5000"
diff=0
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --diff) diff=1; shift ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: bench/scale.sh [--runs N] [--sizes \"10 100 1000 5000\"] [--diff] [--bin PATH]" >&2; exit 2 ;;
  esac
done
command -v git >/dev/null || { echo "bench/scale.sh: git is needed for the city" >&2; exit 2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ -z "$bin" ]; then
  bin="$work/spirepod"
  build_spirepod "$bin"
fi
# spirepod runs with its own HOME (no user config, no kubeconfig, no GitHub
# token, no gh on PATH); go and hack/testbin.sh keep the real one (the build
# cache and the test bed's binaries live there).
mkdir -p "$work/home"
unset GH_TOKEN GITHUB_TOKEN GH_ENTERPRISE_TOKEN GITHUB_ENTERPRISE_TOKEN
spenv=(env HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" NO_COLOR=1 KUBECONFIG="$work/no-kubeconfig"
  PATH=/nonexistent "$bin")
sp() { "${spenv[@]}" "$@"; }
git_() { git -c user.name=bench -c user.email=bench@localhost "$@"; }

# timeit FILE CMD...: run CMD once (any exit code), append its wall-clock
# nanoseconds to FILE and its CPU nanoseconds (user+sys) to FILE.cpu.
timeit() {
  local f=$1; shift
  local t0 t1
  t0=$(now_ns)
  /usr/bin/time -f "%U %S" -o "$f.t" "$@" >/dev/null 2>&1 || true
  t1=$(now_ns)
  echo $((t1 - t0)) >> "$f"
  tail -1 "$f.t" | awk '{printf "%.0f\n", ($1+$2)*1e9}' >> "$f.cpu"
}

declare -A med cpu
cmds="init pr-spiffe-id-dry-run status city-check"
[ "$diff" = 1 ] && cmds="$cmds diff"
for n in $sizes; do
  d="$work/n$n"; mkdir -p "$d"
  # One scaffold for the commands that read it.
  if ! sp init --team bench --namespace team-bench --replicas "$n" "$d/sc" >"$d/init.log" 2>&1; then
    echo "$n replicas: init refused: $(grep -m1 error "$d/init.log" || true)"
    for c in $cmds; do med[$c,$n]=""; done
    continue
  fi
  (cd "$d/sc" && sp pki gen >/dev/null 2>&1)
  # The city: base branch main with one commit, then both branches merged.
  git_ init -q -b main "$d/city"
  echo city > "$d/city/README.md"
  git_ -C "$d/city" add -A && git_ -C "$d/city" commit -q -m city
  (cd "$d/sc" && sp pr trust-ca --local "$d/city" >/dev/null 2>&1) || echo "$n replicas: pr trust-ca --local failed" >&2
  git_ -C "$d/city" merge -q --ff-only spirepod/bench/trust-ca 2>/dev/null || true
  (cd "$d/sc" && sp pr spiffe-id --local "$d/city" >/dev/null 2>&1) || echo "$n replicas: pr spiffe-id --local failed" >&2
  git_ -C "$d/city" merge -q --ff-only spirepod/bench/spiffe-id 2>/dev/null || true
  for c in $cmds; do : > "$d/$c"; : > "$d/$c.cpu"; done
  for i in $(seq "$runs"); do
    timeit "$d/init" "${spenv[@]}" init --team bench --namespace team-bench --replicas "$n" "$d/init-$i"
    (cd "$d/sc" && timeit "$d/pr-spiffe-id-dry-run" "${spenv[@]}" pr spiffe-id --dry-run)
    (cd "$d/sc" && timeit "$d/status" "${spenv[@]}" status)
    timeit "$d/city-check" "${spenv[@]}" city check "$d/city"
    rm -rf "$d/init-$i"
  done
  for c in $cmds; do
    [ "$c" = diff ] && continue
    med[$c,$n]=$(median < "$d/$c")
    cpu[$c,$n]=$(median < "$d/$c.cpu")
  done
done

if [ "$diff" = 1 ]; then
  # diff needs a cluster: the Go side starts the test bed once and times
  # `spirepod diff` for every size (a fresh namespace each), printing
  # "diff N MEDIAN_NS" lines.
  (cd "$here/.." && hack/testbin.sh >/dev/null) # builds only what is missing from the cache
  out=$(cd "$here/.." && SPIREPOD_BENCH=1 SPIREPOD_TESTBIN=$(hack/testbin.sh --print) BENCH_RUNS="$runs" BENCH_SIZES="$sizes" BENCH_BIN="$bin" \
    go test ./bench -run TestBenchScaleDiff -count=1 -v -timeout 60m 2>&1) || { echo "$out" | tail -20 >&2; exit 1; }
  while read -r _ n ns c; do med[diff,$n]=$ns; cpu[diff,$n]=$c; done < <(echo "$out" | grep -oE 'diff [0-9]+ [0-9]+ [0-9]+$')
fi

for what in wall cpu; do
  echo "median $what time:"
  printf '%-22s' "replicas"; for n in $sizes; do printf '%12s' "$n"; done; echo
  for c in $cmds; do
    printf '%-22s' "$c"
    for n in $sizes; do
      if [ "$what" = wall ]; then v=${med[$c,$n]:-}; else v=${cpu[$c,$n]:-}; fi
      if [ -n "$v" ]; then printf '%12s' "$(ms "$v") ms"; else printf '%12s' "-"; fi
    done
    echo
  done
done
echo "medians of $runs runs; ratio of the CPU medians between sizes (and the same ratio per 10x of pods):"
for c in $cmds; do
  line="$c:"
  prev=""
  for n in $sizes; do
    v=${cpu[$c,$n]:-}
    if [ -n "$prev" ] && [ -n "$v" ] && [ -n "${cpu[$c,$prev]:-}" ]; then
      line="$line $prev->$n x$(ratio "$v" "${cpu[$c,$prev]}") ($(awk -v a="$v" -v b="${cpu[$c,$prev]}" -v m="$prev" -v n="$n" \
        'BEGIN {printf "%.1f", exp(log(a/b) / (log(n/m)/log(10)))}') per 10x);"
    fi
    prev=$n
  done
  echo "$line"
done
