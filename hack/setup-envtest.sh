#!/usr/bin/env bash
# setup-envtest.sh builds the control-plane binaries that envtest and `make dev` need
# (kube-apiserver, etcd, kube-controller-manager) from the Go module proxy, because the
# usual prebuilt envtest download is not reachable everywhere keysmith is developed.
#
# Usage: hack/setup-envtest.sh [DEST]
#   DEST defaults to bin/k8s/<kube-version>. The directory is printed on stdout, so
#   `export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)` works.
#
# When KUBEBUILDER_ASSETS is set and holds all three binaries, it is used as is.
# Built binaries are also kept in ${XDG_CACHE_HOME:-$HOME/.cache}/keysmith/ so a fresh
# clone on the same machine reuses them instead of building again (measured here: about 20 minutes cold on 2 cores).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
STAGING_VERSION="v0.${KUBE_VERSION#1.}"
BINARIES=(kube-apiserver etcd kube-controller-manager)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/bin/k8s/$KUBE_VERSION-etcd$ETCD_VERSION}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/keysmith/k8s/$KUBE_VERSION-etcd$ETCD_VERSION"

log() { echo "setup-envtest: $*" >&2; }

complete() {
	local dir="$1" b
	for b in "${BINARIES[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && complete "$KUBEBUILDER_ASSETS"; then
	echo "$KUBEBUILDER_ASSETS"
	exit 0
fi
if complete "$dest"; then
	echo "$dest"
	exit 0
fi
mkdir -p "$dest"
if complete "$cache"; then
	log "reusing binaries from $cache"
	for b in "${BINARIES[@]}"; do cp "$cache/$b" "$dest/$b"; done
	echo "$dest"
	exit 0
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build_kube() {
	local mod="$work/kube"
	mkdir -p "$mod"
	cd "$mod"
	go mod init keysmith.local/kube-build >/dev/null 2>&1
	go mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
	# k8s.io/kubernetes refers to its staging repositories as v0.0.0 with local replaces;
	# point each of them at the published module of the same release.
	local gomod staging
	gomod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
	for staging in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
		go mod edit -replace="$staging=$staging@$STAGING_VERSION"
	done
	cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
	go mod tidy >/dev/null
	log "building kube-apiserver and kube-controller-manager v$KUBE_VERSION (several minutes cold)"
	go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}" \
		-o "$dest/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
	go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION" \
		-o "$dest/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
}

build_etcd() {
	local mod="$work/etcd" m
	mkdir -p "$mod"
	cd "$mod"
	go mod init keysmith.local/etcd-build >/dev/null 2>&1
	go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
	for m in api client/pkg client pkg; do
		go mod edit -replace="go.etcd.io/etcd/$m/v3=go.etcd.io/etcd/$m/v3@v$ETCD_VERSION"
	done
	printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
	go mod tidy >/dev/null
	log "building etcd v$ETCD_VERSION"
	go build -trimpath -ldflags="-s -w" -o "$dest/etcd" go.etcd.io/etcd/server/v3
}

build_etcd
build_kube
mkdir -p "$cache"
for b in "${BINARIES[@]}"; do cp "$dest/$b" "$cache/$b.tmp" && mv "$cache/$b.tmp" "$cache/$b"; done
log "binaries ready in $dest"
echo "$dest"
