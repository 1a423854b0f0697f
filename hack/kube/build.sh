#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl from the Go module proxy (the wrapper module in hack/kube/tools) and caches the binaries in
# a folder named by version. Prints the folder on stdout; progress on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
cache=${TETHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}
bin="$cache/kube/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=()
for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi

log() { printf '[hack/kube] %s\n' "$*" >&2; }
mkdir -p "$bin"
# One build at a time per cache: parallel test packages and `make run` may
# all ask at once. The lock is released when this script exits.
exec 9>"$bin/.build.lock"
if ! flock -n 9; then
  log "another build of $bin is running; waiting for it"
  flock 9
fi
missing=()
for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# Seconds each build took here with cold Go module and build caches, on 2
# cores, in this order: each one reuses what the ones before it compiled.
# With a warm Go build cache each is little more than a link.
declare -A cold=([etcd]=60 [kube-apiserver]=600 [kube-controller-manager]=165 [kube-scheduler]=15 [kubectl]=90)
cores=$(nproc 2>/dev/null || echo 2)
# Seconds to a short human form: 45s, 2m05s.
human() { if (( $1 >= 60 )); then printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); else printf '%ds' "$1"; fi; }
estimate() { human $(( cold[$1] * 2 / (cores < 2 ? 2 : cores) )); }
total=0
for b in "${missing[@]}"; do total=$(( total + cold[$b] )); done
log "building ${#missing[@]} binaries (${missing[*]}) into $bin"
log "on $cores cores with cold Go caches this takes about $(human $(( total * 2 / (cores < 2 ? 2 : cores) ))) (measured: $(human "$total") on 2 otherwise idle cores; more on a busy machine, much less with a warm Go build cache)"

# heartbeat prints a line every 30 s while the compiler is silent. It must
# not outlive the build holding the script's output: whoever reads that
# pipe (dev/kube's EnsureBinaries) waits for every writer to let go. So its
# sleep holds neither the pipes nor the lock, and a TERM ends both at once.
heartbeat() {
  local name=$1 start=$2 nap
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 30 </dev/null >/dev/null 2>&1 9>&- &
    nap=$!
    wait "$nap"
    log "  still building $name: $(human $(( $(date +%s) - start ))) so far (about $(estimate "$name") with cold caches)"
  done
}
ticker=
stop_heartbeat() {
  if [ -n "$ticker" ]; then kill "$ticker" 2>/dev/null || true; wait "$ticker" 2>/dev/null || true; ticker=; fi
}
trap stop_heartbeat EXIT

cd "$here/tools"
export GOWORK=off GOFLAGS=-mod=mod
began=$(date +%s)
step=0
for b in "${missing[@]}"; do
  step=$(( step + 1 ))
  case $b in
    etcd) pkg=go.etcd.io/etcd/server/v3 ;;
    *) pkg=k8s.io/kubernetes/cmd/$b ;;
  esac
  log "[$step/${#missing[@]}] building $b ($pkg): about $(estimate "$b") with cold caches"
  start=$(date +%s)
  heartbeat "$b" "$start" >/dev/null &
  ticker=$!
  if ! go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$b.tmp" "$pkg"; then
    stop_heartbeat
    log "building $b failed"; exit 1
  fi
  stop_heartbeat
  mv "$bin/$b.tmp" "$bin/$b"
  log "[$step/${#missing[@]}] built $b in $(human $(( $(date +%s) - start )))"
done
log "built ${#missing[@]} binaries in $(human $(( $(date +%s) - began )))"
echo "$bin"
