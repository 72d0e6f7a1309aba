# deploy/kubernetes/lib.sh: what validate.sh and test.sh share — a
# Kubernetes control plane on this machine's loopback: Debian's etcd and
# the kube-apiserver that k8sbin.sh builds, with a self-signed serving
# certificate, a service-account key pair and a static token (an admin in
# system:masters). Sourced, not run. The caller sets K8S_WORK (a private
# folder), K8S_BIN (the binaries' folder), K8S_NAME (for messages) and an
# EXIT trap that calls k8s_stop; every process started here is recorded in
# K8S_PIDS and k8s_stop ends them in reverse order.

K8S_PIDS=()
K8S_T0=${K8S_T0:-$SECONDS}

k8s_say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - K8S_T0)); }
k8s_die() {
	printf '%s: FAILED: %s\n' "$K8S_NAME" "$*" >&2
	exit 1
}

# k8s_apt PROGRAM:PACKAGE...: installs the Debian packages whose program is
# missing (root).
k8s_apt() {
	local need=() p
	for p in "$@"; do
		command -v "${p%%:*}" >/dev/null 2>&1 || [[ -x ${p%%:*} ]] || need+=("${p#*:}")
	done
	((${#need[@]})) || return 0
	[[ $(id -u) == 0 ]] || k8s_die "needs ${need[*]} (Debian packages): run as root, or install them"
	echo "$K8S_NAME: apt-get install ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# k8s_free_port: a TCP port on 127.0.0.1 that nothing listens on now.
k8s_free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# k8s_bg NAME CMD...: starts CMD in the background, its output in
# $K8S_WORK/NAME.log, and records its pid.
k8s_bg() {
	local name=$1
	shift
	"$@" >"$K8S_WORK/$name.log" 2>&1 &
	K8S_PIDS+=($!)
}

# k8s_wait SECONDS WHAT CMD...: runs CMD until it succeeds; after SECONDS
# says so and returns 1.
k8s_wait() {
	local limit=$1 what=$2 t=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - t >= limit)); then
			printf '%s: %s: not after %ds\n' "$K8S_NAME" "$what" "$limit" >&2
			return 1
		fi
		sleep 0.5
	done
}

# k8s_tail NAME...: the ends of the named logs, on stderr.
k8s_tail() {
	local n f
	for n in "$@"; do
		f=$K8S_WORK/$n.log
		[[ -s $f ]] && { echo "--- tail of $f" >&2; tail -n "${K8S_TAIL_LINES:-20}" "$f" >&2; }
	done
	return 0
}

# k8s_stop: ends every process k8s_bg started, newest first.
k8s_stop() {
	local i pid
	for ((i = ${#K8S_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${K8S_PIDS[i]}
		kill "$pid" 2>/dev/null || continue
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	K8S_PIDS=()
}

# k8s_control_plane [APISERVER-FLAG...]: etcd and kube-apiserver on
# 127.0.0.1 (free ports); exports KUBECONFIG (admin, token) and sets
# K8S_SERVER, K8S_CA ($K8S_WORK/pki/admin-token holds the admin's token).
# The extra flags go to kube-apiserver.
k8s_control_plane() {
	local etcd_port peer_port token
	etcd_port=$(k8s_free_port)
	peer_port=$(k8s_free_port)
	while [[ $peer_port == "$etcd_port" ]]; do peer_port=$(k8s_free_port); done
	mkdir -p "$K8S_WORK/etcd" "$K8S_WORK/pki"
	chmod 700 "$K8S_WORK/etcd"
	k8s_bg etcd etcd --name tinct --data-dir "$K8S_WORK/etcd" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "tinct=http://127.0.0.1:$peer_port" --initial-cluster-state new \
		--listen-metrics-urls '' --log-level warn --logger zap
	k8s_wait 30 "etcd on 127.0.0.1:$etcd_port" curl -fsS "http://127.0.0.1:$etcd_port/health" ||
		{ k8s_tail etcd; k8s_die "etcd did not start"; }

	openssl genrsa -out "$K8S_WORK/pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$K8S_WORK/pki/sa.key" -pubout -out "$K8S_WORK/pki/sa.pub" 2>/dev/null
	token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	printf '%s,tinct-admin,tinct-admin,"system:masters"\n' "$token" >"$K8S_WORK/pki/tokens.csv"
	printf '%s\n' "$token" >"$K8S_WORK/pki/admin-token"
	chmod 600 "$K8S_WORK/pki/sa.key" "$K8S_WORK/pki/tokens.csv" "$K8S_WORK/pki/admin-token"

	local port
	port=$(k8s_free_port)
	K8S_SERVER=https://127.0.0.1:$port
	K8S_CA=$K8S_WORK/pki/apiserver.crt # written by --cert-dir
	k8s_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$etcd_port" \
		--bind-address 127.0.0.1 --secure-port "$port" \
		--cert-dir "$K8S_WORK/pki" \
		--service-account-key-file "$K8S_WORK/pki/sa.pub" \
		--service-account-signing-key-file "$K8S_WORK/pki/sa.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--token-auth-file "$K8S_WORK/pki/tokens.csv" \
		--authorization-mode RBAC \
		--profiling=false \
		"$@"
	cat >"$K8S_WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tinct
  cluster:
    server: $K8S_SERVER
    certificate-authority: $K8S_CA
users:
- name: tinct-admin
  user:
    token: $token
contexts:
- name: tinct
  context: {cluster: tinct, user: tinct-admin, namespace: default}
current-context: tinct
EOF
	chmod 600 "$K8S_WORK/kubeconfig"
	export KUBECONFIG=$K8S_WORK/kubeconfig
	# readyz needs the certificate on disk first; then the full check
	k8s_wait 20 "kube-apiserver's serving certificate" test -s "$K8S_CA" ||
		{ k8s_tail kube-apiserver; k8s_die "kube-apiserver did not start"; }
	k8s_wait "${K8S_READY_LIMIT:-120}" "kube-apiserver /readyz on $K8S_SERVER" "$K8S_BIN/kubectl" get --raw /readyz ||
		{ k8s_tail kube-apiserver etcd; k8s_die "kube-apiserver is not ready"; }
}
