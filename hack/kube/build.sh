#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the Go
# module proxy (the wrapper module in hack/kube/tools) and caches the binaries in
# a folder named by version. Prints the folder on stdout; progress on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
cache=${TETHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}
bin="$cache/kube/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"

want=(etcd kube-apiserver kube-controller-manager kubectl)
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

cd "$here/tools"
export GOWORK=off GOFLAGS=-mod=mod
for b in "${missing[@]}"; do
  case $b in
    etcd) pkg=go.etcd.io/etcd/server/v3 ;;
    *) pkg=k8s.io/kubernetes/cmd/$b ;;
  esac
  log "building $b ($pkg); the first build takes minutes (kube-apiserver about 10 on 2 cores)"
  start=$(date +%s)
  # Progress: print a heartbeat while the compiler is silent.
  ( while sleep 30; do log "  still building $b ($(( $(date +%s) - start ))s)"; done ) &
  ticker=$!
  if ! go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$b.tmp" "$pkg"; then
    kill "$ticker" 2>/dev/null || true
    log "building $b failed"; exit 1
  fi
  kill "$ticker" 2>/dev/null || true
  mv "$bin/$b.tmp" "$bin/$b"
  log "built $b in $(( $(date +%s) - start ))s"
done
echo "$bin"
