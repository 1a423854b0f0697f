#!/usr/bin/env bash
# The images docker-compose.yml needs beside the services' (make images
# builds both): tether/kube:dev (etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler as hack/kube/build.sh built
# them),
# tether/devnode:dev (the development node, with a shell, cat and tar for
# kubectl exec and cp, and podtool for test pods) and tether/tether-dev:dev
# (the one-shot that makes the stack's certificates). All FROM scratch:
# no image registry. The Kubernetes binaries are dynamically linked, so
# each goes in with its loader and libraries as ldd names them.
#
#   bash hack/images/local.sh [STATE_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
state=${1:-$root/.state}
GO=${GO:-go}
kube=$(bash "$root/hack/kube/build.sh" | tail -n1)

# rootfs DIR FILE...: copies each FILE to DIR/bin/<name>, and its
# libraries (and the loader) to DIR at their own paths.
rootfs() {
  local dir=$1; shift
  mkdir -p "$dir/bin" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  for f in "$@"; do
    cp -L "$f" "$dir/bin/$(basename "$f")"
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and
    # "/lib64/ld-linux-x86-64.so.2 (0x…)"; a static binary has neither.
    { ldd "$f" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | while read -r lib; do
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done
  done
}

image() { # image NAME DIR: FROM scratch with DIR's content
  printf 'FROM scratch\nCOPY . /\nENV PATH=/bin\nUSER 65532:65532\n' > "$2/Dockerfile"
  printf 'Dockerfile\n' > "$2/.dockerignore"
  docker build -q -t "tether/$1:dev" "$2" >/dev/null
  echo "tether/$1:dev"
}

out=$state/images
rm -rf "$out/kube" "$out/devnode" "$out/tether-dev"

rootfs "$out/kube" "$kube/etcd" "$kube/kube-apiserver" "$kube/kube-controller-manager" "$kube/kube-scheduler"
image kube "$out/kube"

mkdir -p "$out/devnode/build"
for cmd in devnode podtool; do
  (cd "$root" && CGO_ENABLED=0 $GO build -trimpath -o "$out/devnode/build/$cmd" "./dev/cmd/$cmd")
done
rootfs "$out/devnode" "$out/devnode/build/devnode" "$out/devnode/build/podtool" \
  "$(command -v sh)" "$(command -v cat)" "$(command -v tar)" "$(command -v ls)" "$(command -v sleep)" "$(command -v env)"
rm -rf "$out/devnode/build"
image devnode "$out/devnode"

mkdir -p "$out/tether-dev/bin"
(cd "$root" && CGO_ENABLED=0 $GO build -trimpath -o "$out/tether-dev/bin/tether-dev" ./dev/cmd/tether-dev)
image tether-dev "$out/tether-dev"
