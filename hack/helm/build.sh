#!/usr/bin/env bash
# Builds helm from the Go module proxy (`go install helm.sh/helm/v4/cmd/helm@VERSION`:
# helm's own module, pinned by its go.sum, no wrapper module needed) and
# caches it in a folder named by version. Prints the binary's path on
# stdout; progress on stderr. helm never enters go.work or the services'
# modules.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.3.2}
cache=${TETHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}
bin="$cache/helm/$HELM_VERSION/bin"
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi

log() { printf '[hack/helm] %s\n' "$*" >&2; }
mkdir -p "$bin"
# One build at a time per cache (parallel test packages may all ask).
exec 9>"$bin/.build.lock"
if ! flock -n 9; then
  log "another build of helm $HELM_VERSION is running; waiting for it"
  flock 9
fi
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi

major=${HELM_VERSION%%.*}
tmp=$(mktemp -d "$bin/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building helm $HELM_VERSION from the module proxy (a few minutes on 2 cores, once)"
start=$(date +%s)
# Outside any workspace or module of the project: helm's own go.mod decides.
(cd "$tmp" && GOWORK=off GOFLAGS=-mod=mod GOBIN="$tmp" \
  go install -trimpath -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION") >&2
mv "$tmp/helm" "$bin/helm"
log "built helm $HELM_VERSION in $(( $(date +%s) - start ))s"
echo "$bin/helm"
