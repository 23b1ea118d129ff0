#!/usr/bin/env bash
# setup-envtest.sh provides the control-plane binaries that envtest and `make dev` need
# (kube-apiserver, etcd, kube-controller-manager).
#
# Usage: hack/setup-envtest.sh [DEST]
#   The directory holding the binaries is printed on stdout, so
#   `export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)` works. Progress goes to stderr.
#
# Where the binaries come from, first match wins:
#   1. $KUBEBUILDER_ASSETS, when it holds all three binaries: used as is.
#   2. DEST (default: bin/k8s/<kube>-etcd<etcd>/, then bin/k8s/<kube>-envtest/), when complete.
#   3. The cache ${XDG_CACHE_HOME:-$HOME/.cache}/keysmith/k8s/ (same two names), copied into
#      DEST, so a fresh clone on the same machine reuses them.
#   4. Download: controller-runtime's setup-envtest fetches the envtest archive of
#      KUBE_VERSION (kube-apiserver and etcd only; seconds where it is reachable). The archive
#      brings its own etcd, whatever ETCD_VERSION says, so these land in bin/k8s/<kube>-envtest/.
#      kube-controller-manager is not in the archive: it is always built (~2.5 min).
#   5. Build: all three from the Go module proxy into bin/k8s/<kube>-etcd<etcd>/ (measured
#      here: about 20 minutes cold on 2 cores).
# Every directory this script fills, and its cache copy, gets a file ORIGIN with one line per
# binary, "<binary> download|build <what>", e.g. "etcd build go.etcd.io/etcd/server/v3 v3.7.3".
# Directories that are complete are never rewritten (an older one may have no ORIGIN).
#
# Environment:
#   KUBE_VERSION (1.37.2), ETCD_VERSION (3.7.3)   what to provide (ETCD_VERSION: build only).
#   ENVTEST_DOWNLOAD (true)       false skips step 4 (no network attempt, build only).
#   ENVTEST_INDEX_URL             the envtest release index setup-envtest reads (its --index);
#                                 default controller-tools' envtest-releases.yaml on GitHub.
#                                 Each archive is checked against the sha512 the index lists.
#   ENVTEST_DOWNLOAD_TIMEOUT (120) seconds the download may take before the build takes over.
#   SETUP_ENVTEST_VERSION (v0.25.1) the sigs.k8s.io/controller-runtime/tools/setup-envtest
#                                 version that is `go run` (from the Go module proxy).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
STAGING_VERSION="v0.${KUBE_VERSION#1.}"
ENVTEST_DOWNLOAD="${ENVTEST_DOWNLOAD:-true}"
ENVTEST_INDEX_URL="${ENVTEST_INDEX_URL:-https://raw.githubusercontent.com/kubernetes-sigs/controller-tools/HEAD/envtest-releases.yaml}"
ENVTEST_DOWNLOAD_TIMEOUT="${ENVTEST_DOWNLOAD_TIMEOUT:-120}"
SETUP_ENVTEST_VERSION="${SETUP_ENVTEST_VERSION:-v0.25.1}"
BINARIES=(kube-apiserver etcd kube-controller-manager)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
built_name="$KUBE_VERSION-etcd$ETCD_VERSION"
downloaded_name="$KUBE_VERSION-envtest"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/keysmith/k8s"

log() { echo "setup-envtest: $*" >&2; }

complete() {
	local dir="$1" b
	for b in "${BINARIES[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

# copy_into SRC DST copies the binaries and ORIGIN, each through a temporary name.
copy_into() {
	local src="$1" dst="$2" f
	mkdir -p "$dst"
	for f in "${BINARIES[@]}" ORIGIN; do
		[ -e "$src/$f" ] || continue
		cp "$src/$f" "$dst/$f.tmp" && mv "$dst/$f.tmp" "$dst/$f"
	done
}

# redact drops user info and query from a URL before it is logged or recorded.
redact() { echo "${1%%\?*}" | sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@#\1#'; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && complete "$KUBEBUILDER_ASSETS"; then
	echo "$KUBEBUILDER_ASSETS"
	exit 0
fi
if [ $# -gt 0 ]; then
	dest_built="$1" dest_downloaded="$1"
	if complete "$1"; then
		echo "$1"
		exit 0
	fi
else
	dest_built="$root/bin/k8s/$built_name" dest_downloaded="$root/bin/k8s/$downloaded_name"
	for d in "$dest_built" "$dest_downloaded"; do
		if complete "$d"; then
			echo "$d"
			exit 0
		fi
	done
fi
if complete "$cache_root/$built_name"; then
	log "reusing binaries from $cache_root/$built_name"
	copy_into "$cache_root/$built_name" "$dest_built"
	echo "$dest_built"
	exit 0
fi
if complete "$cache_root/$downloaded_name"; then
	log "reusing binaries from $cache_root/$downloaded_name"
	copy_into "$cache_root/$downloaded_name" "$dest_downloaded"
	echo "$dest_downloaded"
	exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

with_timeout() {
	local secs="$1"
	shift
	if command -v timeout >/dev/null; then
		timeout "$secs" "$@"
	elif command -v gtimeout >/dev/null; then
		gtimeout "$secs" "$@"
	else
		log "no timeout command: the download runs without ENVTEST_DOWNLOAD_TIMEOUT"
		"$@"
	fi
}

# download runs setup-envtest into a store of its own under $work and, when it yields an
# executable kube-apiserver and etcd, sets $downloaded to their directory.
downloaded=""
download() {
	local store="$work/setup-envtest" out rc=0 b
	mkdir -p "$store"
	log "downloading kube-apiserver and etcd $KUBE_VERSION with setup-envtest $SETUP_ENVTEST_VERSION from $(redact "$ENVTEST_INDEX_URL") (timeout ${ENVTEST_DOWNLOAD_TIMEOUT}s)"
	out="$(cd "$work" && with_timeout "$ENVTEST_DOWNLOAD_TIMEOUT" go run -trimpath "sigs.k8s.io/controller-runtime/tools/setup-envtest@$SETUP_ENVTEST_VERSION" \
		use --bin-dir "$store" -p path --installed-only=false --use-env=false --verify=true \
		--index "$ENVTEST_INDEX_URL" "$KUBE_VERSION")" || rc=$?
	if [ "$rc" -eq 124 ]; then
		log "download timed out after ${ENVTEST_DOWNLOAD_TIMEOUT}s"
		return 1
	elif [ "$rc" -ne 0 ]; then
		log "download failed (exit status $rc)"
		return 1
	fi
	case "$out" in
	"$store"/*) ;;
	*)
		log "download failed: setup-envtest named a directory outside its store: $out"
		return 1
		;;
	esac
	for b in kube-apiserver etcd; do
		if [ ! -x "$out/$b" ] || [ -L "$out/$b" ]; then
			log "download failed: no executable $b in $out"
			return 1
		fi
	done
	downloaded="$out"
}

build_kube() {
	local mod="$work/kube" target
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
	for target in "$@"; do
		log "building $target v$KUBE_VERSION (minutes cold)"
		go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#1.}" \
			-o "$dest/$target" "k8s.io/kubernetes/cmd/$target"
		echo "$target build k8s.io/kubernetes v$KUBE_VERSION" >>"$work/ORIGIN"
	done
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
	echo "etcd build go.etcd.io/etcd/server/v3 v$ETCD_VERSION" >>"$work/ORIGIN"
}

if [ "$ENVTEST_DOWNLOAD" = false ]; then
	log "ENVTEST_DOWNLOAD=false: not trying the envtest download"
else
	download || log "falling back to building kube-apiserver and etcd from the Go module proxy"
fi

: >"$work/ORIGIN"
if [ -n "$downloaded" ]; then
	dest="$dest_downloaded" name="$downloaded_name"
	mkdir -p "$dest"
	rm -f "$dest/ORIGIN"
	etcd_version="$(with_timeout 10 "$downloaded/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p')" || true
	what="envtest $(basename "$downloaded") from $(redact "$ENVTEST_INDEX_URL") (setup-envtest $SETUP_ENVTEST_VERSION)"
	cp "$downloaded/kube-apiserver" "$dest/kube-apiserver"
	cp "$downloaded/etcd" "$dest/etcd"
	echo "kube-apiserver download $what" >>"$work/ORIGIN"
	echo "etcd download $what: etcd ${etcd_version:-of unknown version}" >>"$work/ORIGIN"
	log "using the downloaded kube-apiserver and etcd (etcd ${etcd_version:-of unknown version}; ETCD_VERSION=$ETCD_VERSION applies to builds only); kube-controller-manager is not in the download"
	export GOFLAGS=-mod=mod
	build_kube kube-controller-manager
else
	dest="$dest_built" name="$built_name"
	mkdir -p "$dest"
	rm -f "$dest/ORIGIN"
	export GOFLAGS=-mod=mod
	build_etcd
	build_kube kube-apiserver kube-controller-manager
fi
cp "$work/ORIGIN" "$dest/ORIGIN"
copy_into "$dest" "$cache_root/$name"
log "binaries ready in $dest:"
sed 's/^/setup-envtest:   /' "$dest/ORIGIN" >&2
echo "$dest"
