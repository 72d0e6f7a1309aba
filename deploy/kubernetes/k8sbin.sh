#!/usr/bin/env bash
# deploy/kubernetes/k8sbin.sh PROGRAM...: builds Kubernetes programs
# (kube-apiserver, kubectl, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy) from the Go module proxy with the nested module
# deploy/kubernetes/k8sbin (k8s.io/kubernetes at one release, its staging
# modules replaced by the same release's v0.x tags) and caches them by
# version in $K8S_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/tinct/
# k8s-VERSION). Programs already there are reused; the last line printed is
# the folder. Cold, on 2 cores: kube-apiserver + kubectl about 8 minutes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MOD=$HERE/k8sbin
VERSION=$(sed -nE 's/^[[:space:]]*(require[[:space:]]+)?k8s\.io\/kubernetes[[:space:]]+(v[0-9.]+).*/\2/p' "$MOD/go.mod" | head -1)
[[ -n $VERSION ]] || {
	echo "k8sbin: no k8s.io/kubernetes version in $MOD/go.mod" >&2
	exit 1
}
CACHE=${K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tinct/k8s-$VERSION}
(($#)) || set -- kube-apiserver kubectl
need=()
for p in "$@"; do
	[[ -x $CACHE/$p ]] || need+=("$p")
done
if ((${#need[@]})); then
	echo "k8sbin: building ${need[*]} $VERSION into $CACHE (minutes on 2 cores; cached after)" >&2
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	minor=${VERSION#v1.}
	minor=${minor%%.*}
	pkgs=()
	for p in "${need[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
	v=k8s.io/component-base/version
	t0=$SECONDS
	(cd "$MOD" && go build -trimpath -o "$tmp/" \
		-ldflags "-s -w -X $v.gitVersion=$VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
		"${pkgs[@]}")
	for p in "${need[@]}"; do mv -f "$tmp/$p" "$CACHE/$p"; done
	echo "k8sbin: built ${need[*]} in $((SECONDS - t0)) s" >&2
fi
echo "$CACHE"
