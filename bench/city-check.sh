#!/usr/bin/env bash
# Times `spirepod city check` as a whole process on generated cities (git
# repositories, packed like a clone): teams × 3 pods, formats mixed (entry-json,
# ClusterStaticEntry, entry-json aliases + SpiffeID workloads), the scaffold
# in every team folder. For each size: the full check and `--base HEAD~1`
# with one team's registration file changed; median of RUNS runs each,
# alternating. Sizes 100, 1000, 5000 show how cost grows with teams. Each
# line gives the wall-clock median and the median CPU time (user+sys, from
# /usr/bin/time): on a shared machine the CPU time is the steadier figure.
# Every team folder is built with kustomize (as kubectl apply -k does):
# "full, cold" builds each with no build cache (--build-cache ""), "full"
# and "--base" use a build cache of their own (the first run fills it).
#   bench/city-check.sh [RUNS] [SIZES...]   (defaults 11; 100 1000 5000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
runs=${1:-11}; shift || true
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 5000)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build_spirepod "$work/spirepod"
for n in "${sizes[@]}"; do
  city="$work/city-$n"
  (cd "$here/.." && SPIREPOD_BENCH_CITY="$city" BENCH_TEAMS="$n" BENCH_CHANGE=1 \
    go test ./bench -run TestBenchCityGenerate -count=1 >/dev/null)
  for k in cold full base basecold; do : > "$work/$k"; : > "$work/$k.cpu"; done
  cache="$work/cache-$n"
  "$work/spirepod" city check "$city" --build-cache "$cache" >/dev/null || true # fills the cache
  for _ in $(seq "$runs"); do
    for k in cold full base basecold; do
      args=(city check "$city" --build-cache "$cache")
      [ "$k" = cold ] && args=(city check "$city" --build-cache "")
      [ "$k" = base ] && args+=(--base HEAD~1)
      [ "$k" = basecold ] && args=(city check "$city" --build-cache "" --base HEAD~1)
      t0=$(now_ns)
      /usr/bin/time -f "%U %S" -o "$work/t" "$work/spirepod" "${args[@]}" >/dev/null
      t1=$(now_ns)
      echo $((t1 - t0)) >> "$work/$k"
      awk '{printf "%.0f\n", ($1+$2)*1e9}' "$work/t" >> "$work/$k.cpu"
    done
  done
  files=$(git -C "$city" ls-files | wc -l)
  echo "$n teams ($files files): full, cold $(ms "$(median < "$work/cold")") ms (cpu $(ms "$(median < "$work/cold.cpu")") ms)," \
    "full $(ms "$(median < "$work/full")") ms (cpu $(ms "$(median < "$work/full.cpu")") ms)," \
    "--base one team changed $(ms "$(median < "$work/base")") ms (cpu $(ms "$(median < "$work/base.cpu")") ms)," \
    "--base, cold $(ms "$(median < "$work/basecold")") ms (cpu $(ms "$(median < "$work/basecold.cpu")") ms); medians of $runs runs"
done
