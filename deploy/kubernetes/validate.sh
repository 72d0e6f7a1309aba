#!/usr/bin/env bash
# deploy/kubernetes/validate.sh [KUSTOMIZATION-DIR...]: every manifest of
# deploy/kubernetes (the base and each overlay, or the folders named)
# checked by a real Kubernetes API server on this machine (make
# k8s-validate; .ci/run). It:
#
#  1. installs Debian's etcd-server where etcd is missing, and builds
#     kube-apiserver and kubectl (k8sbin.sh: the release in k8sbin/go.mod,
#     cached by version: about 8 minutes once on 2 cores);
#  2. starts etcd and kube-apiserver on 127.0.0.1 (lib.sh);
#  3. renders each kustomization with kubectl's kustomize and server-side
#     applies it with dryRun=All and strict field validation (kubectl apply
#     --server-side --dry-run=server --validate=strict): the objects go
#     through decoding, defaulting, validation and admission as in a real
#     cluster, and nothing is stored. Any rejection fails;
#  4. applies the base for real into a namespace of its own, then each
#     overlay over it, dry-run: an overlay must be a legal update of a
#     running base (no change to an immutable field such as a StatefulSet's
#     selector or serviceName);
#  5. checks that the check can fail: copies of the base broken on purpose
#     (an out-of-range container port, a misspelt field, a selector that
#     does not match its pods) must each be rejected by the server;
#  6. stops etcd and kube-apiserver (also on failure or Ctrl-C).
#
# Environment: K8S_CACHE (the binaries' folder), K8S_VALIDATE_KEEP=1 keeps
# the work folder. About 35 s once the binaries are cached.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K8S_NAME=k8s-validate
. "$HERE/lib.sh"
unset KUBECONFIG # kubectl talks to this script's API server only

k8s_say "etcd from Debian, kube-apiserver and kubectl from the Go module proxy"
k8s_apt etcd:etcd-server curl:curl openssl:openssl
K8S_BIN=$("$HERE/k8sbin.sh" kube-apiserver kubectl | tail -n 1)
KUBECTL=$K8S_BIN/kubectl
"$K8S_BIN/kube-apiserver" --version
etcd --version | head -n 1

if (($#)); then
	dirs=()
	for d in "$@"; do
		[[ -f $d/kustomization.yaml ]] || k8s_die "$d: no kustomization.yaml"
		dirs+=("$(cd "$d" && pwd)")
	done
else
	mapfile -t dirs < <(cd "$HERE" && find base overlays -name kustomization.yaml -printf '%h\n' | sort)
fi
((${#dirs[@]})) || k8s_die "no kustomization to check"

K8S_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-k8s-validate.XXXXXX")
export KUBECONFIG=$K8S_WORK/kubeconfig # lib.sh writes it
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	k8s_stop
	if [[ $rc -ne 0 ]]; then
		k8s_tail kube-apiserver
	fi
	if [[ $rc -ne 0 || ${K8S_VALIDATE_KEEP:-} == 1 ]]; then
		echo "$K8S_NAME: logs in $K8S_WORK" >&2
	else
		rm -rf "$K8S_WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

k8s_say "etcd and kube-apiserver on 127.0.0.1"
k8s_control_plane
"$KUBECTL" version 2>/dev/null | sed 's/^/  /'

# dry_run DIR: kustomize DIR, then a server-side dry-run apply of what it
# renders; prints the server's answer.
dry_run() {
	local dir=$1
	(cd "$HERE" && "$KUBECTL" kustomize "$dir" 2>&1 >"$K8S_WORK/rendered.yaml") || {
		echo "kubectl kustomize $dir failed"
		return 1
	}
	"$KUBECTL" apply --server-side --dry-run=server --validate=strict --field-manager=tinct \
		-f "$K8S_WORK/rendered.yaml" "${@:2}" 2>&1
}

# A warning from the server fails too, but for one that v1.34.0 gives every
# headless Service, whatever it says (kubernetes/kubernetes#134040, fixed
# in later 1.34 patches).
KNOWN_WARNING='Warning: spec.SessionAffinity is ignored for headless services'

# check WHAT OUTPUT STATUS: prints the server's answer; counts a rejection
# or an unknown warning in fails.
fails=0
check() {
	local what=$1 out=$2 rc=$3 warn
	warn=$(grep 'Warning:' <<<"$out" | grep -vF "$KNOWN_WARNING" || true)
	if ((rc != 0)); then
		printf '%s: REJECTED\n%s\n' "$what" "$(sed 's/^/  /' <<<"$out")" >&2
		fails=$((fails + 1))
	elif [[ -n $warn ]]; then
		printf '%s: WARNINGS\n%s\n' "$what" "$(sed 's/^/  /' <<<"$out")" >&2
		fails=$((fails + 1))
	else
		printf '%s:\n%s\n' "$what" "$(grep -vF "$KNOWN_WARNING" <<<"$out" | sed 's/^/  /')"
	fi
}

k8s_say "server-side apply, dryRun=All: ${dirs[*]}"
for d in "${dirs[@]}"; do
	rc=0
	out=$(dry_run "$d") || rc=$?
	check "$d" "$out" $rc
done
((fails == 0)) || k8s_die "the API server rejected $fails of ${#dirs[@]} kustomizations"

if (($# == 0)); then
	k8s_say "the base applied for real, then each overlay over it (dry-run): legal updates"
	"$KUBECTL" create namespace tinct-validate >/dev/null
	(cd "$HERE" && "$KUBECTL" kustomize base) |
		"$KUBECTL" apply -n tinct-validate --server-side --validate=strict --field-manager=tinct -f - 2>&1 |
		grep -vF "$KNOWN_WARNING" | sed 's/^/  /'
	for d in "${dirs[@]}"; do
		[[ $d == base ]] && continue
		rc=0
		out=$(dry_run "$d" -n tinct-validate) || rc=$?
		check "$d over base" "$out" $rc
	done
	((fails == 0)) || k8s_die "$fails overlays are not a legal update of the base"

	k8s_say "the check can fail: broken copies of the base must be rejected"
	# NAME|FILE|sed expression|what the server must say
	while IFS='|' read -r name file expr want; do
		b=$K8S_WORK/broken/$name
		mkdir -p "$b"
		cp "$HERE"/base/*.yaml "$b/"
		sed -i -E "$expr" "$b/$file"
		cmp -s "$HERE/base/$file" "$b/$file" && k8s_die "$name: the sed expression changed nothing"
		if out=$(dry_run "$b"); then
			printf '%s\n' "$out" >&2
			k8s_die "$name: the server accepted a broken manifest"
		fi
		grep -q -- "$want" <<<"$out" || {
			printf '%s\n' "$out" >&2
			k8s_die "$name: rejected, but not with \"$want\""
		}
		printf '%s: rejected as it should be:\n  %s\n' "$name" "$(grep -m1 -- "$want" <<<"$out")"
	done <<'EOF'
port-out-of-range|workers.yaml|s/containerPort: 7071/containerPort: 70000/|must be between 1 and 65535
misspelt-field|coordinator.yaml|s/^  replicas: 1$/  replica: 1/|.spec.replica: field not declared in schema
selector-mismatch|serve.yaml|/matchLabels:/,/component:/s/component: serve/component: web/|does not match template `labels`
EOF
fi

echo "(not shown: \"$KNOWN_WARNING\", a v1.34.0 bug)"
k8s_say "ok: ${#dirs[@]} kustomizations accepted by kube-apiserver $("$K8S_BIN/kube-apiserver" --version | awk '{print $2}')"
