#!/usr/bin/env bash
# The standing test bed (hack/bed): the real control plane with kwok's node,
# cert-manager, a SPIRE server and the fake GitHub, started once and kept,
# for the inner loop and for trying spirepod by hand.
#
#   hack/bed.sh start   start it in the background (builds what is missing
#                       with hack/testbin.sh), print its environment lines
#   hack/bed.sh env     print the environment lines of the running bed
#   hack/bed.sh stop    stop it: every process it started ends, its dir goes
#   hack/bed.sh status  whether it runs
#
#   eval "$(hack/bed.sh start)"      # the bed's env in this shell
#   make test                        # test packages reuse it (SPIREPOD_BED)
#   hack/bed.sh stop
#
# The bed lives in $SPIREPOD_BED_DIR (default ${TMPDIR:-/tmp}/spirepod-bed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${SPIREPOD_BED_DIR:-${TMPDIR:-/tmp}/spirepod-bed}
export GOFLAGS=${GOFLAGS:--buildvcs=false}

pid_of() { # the bed's pid from its pid file, if that process lives
  local pid
  [ -f "$dir/bed.pid" ] || return 1
  pid=$(cat "$dir/bed.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

case "${1:-}" in
  start)
    if pid=$(pid_of); then
      echo "bed: already running (pid $pid)" >&2
      cat "$dir/bed.env"
      exit 0
    fi
    "$root/hack/testbin.sh" >&2
    mkdir -p "$dir"
    rm -f "$dir/bed.env" "$dir/bed.json"
    (cd "$root" && go build -o "$dir/bed" ./hack/bed) >&2
    # setsid: the bed is its own session, so the caller's terminal signals
    # do not reach it; it stops on `hack/bed.sh stop` (SIGTERM).
    setsid "$dir/bed" -dir "$dir" >"$dir/bed.out" 2>"$dir/bed.log" </dev/null &
    echo $! >"$dir/bed.pid"
    for _ in $(seq 1 600); do
      [ -s "$dir/bed.env" ] && [ -f "$dir/bed.json" ] && { cat "$dir/bed.env"; exit 0; }
      kill -0 "$(cat "$dir/bed.pid")" 2>/dev/null || break
      sleep 0.5
    done
    echo "bed: did not start; its log ($dir/bed.log):" >&2
    tail -n 40 "$dir/bed.log" >&2
    exit 1
    ;;
  env)
    pid_of >/dev/null || { echo "bed: not running (hack/bed.sh start)" >&2; exit 1; }
    cat "$dir/bed.env"
    ;;
  status)
    if pid=$(pid_of); then echo "bed: running (pid $pid, $dir)"; else echo "bed: not running"; exit 1; fi
    ;;
  stop)
    if ! pid=$(pid_of); then echo "bed: not running"; rm -rf "$dir"; exit 0; fi
    kill -TERM "$pid"
    # The bed stops its processes (SIGTERM, SIGKILL after 5 s each) and exits.
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "bed: pid $pid still running after 30 s; killing it (its children die with it: Pdeathsig)" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    echo "bed: stopped"
    ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
