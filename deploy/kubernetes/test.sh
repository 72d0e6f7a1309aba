#!/usr/bin/env bash
# deploy/kubernetes/test.sh: the manifests of deploy/kubernetes/base running
# on a real one-node Kubernetes on this machine (make k8s-test; root). It:
#
#  1. installs what is missing from Debian (etcd-server, containerd, runc,
#     containernetworking-plugins, conntrack), builds the Kubernetes
#     programs once (k8sbin.sh: kube-apiserver, kube-controller-manager,
#     kube-scheduler, kubelet, kube-proxy, kubectl v1.34.0) and the cluster
#     DNS (k8sbin/clusterdns);
#  2. starts, all on this machine: a bridge tinct0 (10.88.0.1/16, the pods'
#     network through the CNI bridge plugin), a containerd of its own (its
#     own socket and folders) with the images tinct:latest (make image) and
#     a pause image imported from Docker (docker save → ctr import), etcd,
#     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
#     (iptables), the cluster DNS on 10.88.0.1:53 and a kubelet: one node;
#  3. runs MinIO on the host at 10.88.0.1:9000 behind a Service
#     minio.storage (no selector; an EndpointSlice), so the base's
#     TINCT_S3_ENDPOINT=minio.storage.svc:9000 resolves and routes as in a
#     cluster; pushes 40 sample photos to s3://tinct/data;
#  4. creates the Secrets as deploy/README.md says, and applies the base
#     through a kustomization of the test's own: the image imported (pull
#     policy Never), 100m CPU requests (the node has 2 cores), and the
#     coordinator's tiny model, -v and EPOCHS;
#  5. asserts that the coordinator, both workers and the web app start and
#     pass their readiness probes; deletes a worker pod mid-run (the
#     StatefulSet recreates it and it rejoins); deletes the coordinator pod
#     (the StatefulSet starts a new one when the old has ended, which
#     resumes from the checkpoint in MinIO and the workers rejoin); that training finishes with every step
#     committed exactly once over both of the coordinator's lives; and that
#     the web app colorizes a photo with the final checkpoint through its
#     Service's cluster IP;
#  6. stops everything it started, newest first (pods, kubelet, control
#     plane, containerd and its shims, MinIO), unmounts what they left, and
#     removes the bridge, its iptables rules and kube-proxy's.
#
# Environment: EPOCHS (default 16), CHECKPOINT_EVERY (epochs, default 1),
# K8S_TEST_KEEP=1 keeps the work folder (also kept on failure), IMAGE.
# K8S_TEST_RUNC names another runc binary (a wrapper, to debug).
# See deploy/kubernetes/README.md for the time it takes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
K8S_NAME=k8s-test
. "$HERE/lib.sh"
# kubectl talks to this script's cluster only: never to one the caller's
# environment names, not even on an early failure
unset KUBECONFIG K8S_SERVER
EPOCHS=${EPOCHS:-16}
IMAGE=${IMAGE:-tinct:latest}
PAUSE_BASE=${PAUSE_BASE:-tinct-base:bookworm}
BR=tinct0
GW=10.88.0.1
POD_CIDR=10.88.0.0/16
SVC_CIDR=10.96.0.0/16
NODE=tinct-node
MINIO=${MINIO:-$(go env GOPATH)/bin/minio}
[[ $(id -u) == 0 ]] || k8s_die "run as root (it starts containerd, a kubelet and kube-proxy)"

k8s_say "Debian packages, Kubernetes programs, images"
k8s_apt etcd:etcd-server containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
	conntrack:conntrack iptables:iptables curl:curl openssl:openssl
K8S_BIN=$("$HERE/k8sbin.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl | tail -n 1)
KUBECTL=$K8S_BIN/kubectl
[[ -x $MINIO ]] || k8s_die "no MinIO server at $MINIO: make minio"
docker image inspect "$IMAGE" >/dev/null 2>&1 || k8s_die "no image $IMAGE: make image"
docker image inspect "$PAUSE_BASE" >/dev/null 2>&1 || k8s_die "no image $PAUSE_BASE: make image"
ip link show "$BR" >/dev/null 2>&1 && k8s_die "a bridge $BR exists: another k8s-test is running, or one left it (ip link del $BR)"

K8S_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-k8s-test.XXXXXX")
chmod 755 "$K8S_WORK"
W=$K8S_WORK
export KUBECONFIG=$W/kubeconfig # lib.sh writes it
SOCK=$W/containerd/containerd.sock
mkdir -p "$W/bin" "$W/logs"
(cd "$HERE/k8sbin" && go build -o "$W/bin/clusterdns" ./clusterdns)
if [[ -x $ROOT/bin/image/tinct ]]; then
	cp "$ROOT/bin/image/tinct" "$W/bin/tinct"
else
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$W/bin/tinct" ./cmd/tinct)
fi
"$K8S_BIN/kubelet" --version

# what was there before, so that cleanup removes only what this run made
had_kube_chains=$({ iptables-save; ip6tables-save; } 2>/dev/null | grep -c '^:KUBE-' || true)
mapfile -t netns_before < <(ls /var/run/netns 2>/dev/null || true)
CONTAINERD_PID=
FOLLOW_PID=
FWD_RULE=(FORWARD -i "$BR" -o "$BR" -m comment --comment tinct-k8s-test -j ACCEPT)

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if [[ $rc -ne 0 && -n ${K8S_SERVER:-} ]]; then
		echo "--- pods" >&2
		"$KUBECTL" get pods -A -o wide >&2 2>/dev/null
		"$KUBECTL" get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 25 >&2
	fi
	if [[ $rc -ne 0 ]]; then
		K8S_TAIL_LINES=15 k8s_tail kubelet containerd kube-proxy clusterdns
		for f in "$W"/logs/*.log; do [[ -s $f ]] && { echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; }; done
	fi
	[[ -n $FOLLOW_PID ]] && kill "$FOLLOW_PID" 2>/dev/null && wait "$FOLLOW_PID" 2>/dev/null
	if [[ -n ${K8S_SERVER:-} ]] && "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
		# pods first, while the kubelet runs: it stops their containers
		"$KUBECTL" delete deployment,statefulset --all -n default --wait=false >/dev/null 2>&1
		"$KUBECTL" delete pods --all -A --grace-period=0 --force >/dev/null 2>&1
		for _ in $(seq 60); do
			[[ -z $("$KUBECTL" get pods -A -o name 2>/dev/null) ]] &&
				[[ -z $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
			sleep 0.5
		done
	fi
	k8s_stop
	if [[ -n $CONTAINERD_PID ]]; then
		local c
		for c in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1
		done
		sleep 0.5
		for c in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
			ctr --address "$SOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1
			ctr --address "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1
		done
		kill "$CONTAINERD_PID" 2>/dev/null
		wait "$CONTAINERD_PID" 2>/dev/null
		# shims outlive containerd: ours are the ones started with our socket
		local pid
		for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
	fi
	# network namespaces the runtime made and left
	local ns
	for ns in $(ls /var/run/netns 2>/dev/null); do
		[[ " ${netns_before[*]} " == *" $ns "* ]] || ip netns delete "$ns" 2>/dev/null
	done
	# mounts under the work folder (secrets, tmpfs, rootfs), innermost first
	awk -v w="$W" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	iptables -D "${FWD_RULE[@]}" >/dev/null 2>&1
	if ((had_kube_chains == 0)); then
		# kube-proxy's rules, then the kubelet's (KUBE-FIREWALL, canaries)
		"$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1
		local ipt t rule ch
		for ipt in iptables ip6tables; do
			for t in filter nat mangle; do
				"$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A [^K][^ ]* .*-j KUBE-' | while read -r rule; do
					eval "$ipt -t $t -D ${rule#-A }" 2>/dev/null
				done
				for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
					"$ipt" -t "$t" -F "$ch" 2>/dev/null
				done
				for ch in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
					"$ipt" -t "$t" -X "$ch" 2>/dev/null
				done
			done
		done
	fi
	ip link del "$BR" 2>/dev/null
	# the kubelet's cgroups (cgroup v1: one tree a controller), innermost first
	for d in /sys/fs/cgroup/*/kubepods; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	if [[ $rc -ne 0 || ${K8S_TEST_KEEP:-} == 1 ]]; then
		echo "$K8S_NAME: logs in $W" >&2
	else
		rm -rf "$W" 2>/dev/null || echo "$K8S_NAME: could not remove all of $W" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "$K8S_NAME: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

k8s_say "the pods' network: bridge $BR $GW/16, CNI bridge plugin"
ip link add "$BR" type bridge
ip addr add "$GW/16" dev "$BR"
ip link set "$BR" up
# Docker's FORWARD policy is DROP; traffic between pods (bridged, seen by
# iptables through br_netfilter) is let through, nothing else. The pods
# have routes to the pod and service ranges only (no default route, no
# masquerading): nothing they send leaves this machine.
ipt() { # iptables without its note about legacy tables; errors still shown
	local out
	out=$(iptables "$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}
ipt -I "${FWD_RULE[@]}"
sysctl -qw net.ipv4.ip_forward=1
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1
CNI_BIN=/usr/lib/cni
mkdir -p "$W/cni/conf" "$W/cni/ipam"
cat >"$W/cni/conf/10-tinct.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tinct",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BR",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GW"}]],
        "routes": [{"dst": "$SVC_CIDR"}],
        "dataDir": "$W/cni/ipam"
      }
    }
  ]
}
EOF

k8s_say "containerd (its own instance) and the images"
mkdir -p "$W/containerd"
cat >"$W/containerd/config.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/tinct-pause:k8s"
  enable_selinux = false
  # this machine's root may not lower an oom_score_adj (no CAP_SYS_RESOURCE
  # over its own): keep the sandboxes' at or above containerd's
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "${K8S_TEST_RUNC:-runc}"
        Root = "$W/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$W/cni/conf"
EOF
containerd --config "$W/containerd/config.toml" >"$W/containerd.log" 2>&1 &
CONTAINERD_PID=$!
k8s_wait 30 "containerd" ctr --address "$SOCK" version || { k8s_tail containerd; k8s_die "containerd did not start"; }
# the pause image: the base image with a process that only sleeps
printf 'FROM %s\nENTRYPOINT ["/bin/sleep", "infinity"]\n' "$PAUSE_BASE" | docker build -q -t tinct-pause:k8s - >/dev/null
docker save "$IMAGE" tinct-pause:k8s -o "$W/images.tar"
ctr --address "$SOCK" -n k8s.io images import "$W/images.tar" >/dev/null
rm -f "$W/images.tar"
ctr --address "$SOCK" -n k8s.io images ls -q | sed 's/^/  /'

k8s_say "etcd, kube-apiserver, kube-controller-manager, kube-scheduler"
# the kubelet trusts client certificates of this CA: the API server's own
# (for logs), nobody else's
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tinct-kubelet-client-ca \
	-keyout "$W/kubelet-ca.key" -out "$W/kubelet-ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver" \
	-keyout "$W/apiserver-kubelet.key" -out "$W/apiserver-kubelet.csr" 2>/dev/null
openssl x509 -req -in "$W/apiserver-kubelet.csr" -CA "$W/kubelet-ca.crt" -CAkey "$W/kubelet-ca.key" \
	-CAcreateserial -days 1 -out "$W/apiserver-kubelet.crt" 2>/dev/null
k8s_control_plane --service-cluster-ip-range "$SVC_CIDR" --advertise-address "$GW" \
	--kubelet-preferred-address-types InternalIP \
	--kubelet-client-certificate "$W/apiserver-kubelet.crt" --kubelet-client-key "$W/apiserver-kubelet.key"
k8s_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
	--bind-address 127.0.0.1 --secure-port "$(k8s_free_port)" --cert-dir "$W/kcm" \
	--service-account-private-key-file "$W/pki/sa.key" --root-ca-file "$K8S_CA" \
	--leader-elect=false --use-service-account-credentials=false --cluster-name tinct \
	--allocate-node-cidrs=false --service-cluster-ip-range "$SVC_CIDR"
k8s_bg kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$KUBECONFIG" \
	--bind-address 127.0.0.1 --secure-port "$(k8s_free_port)" --leader-elect=false

k8s_say "kube-proxy, the cluster DNS on $GW:53, the kubelet"
cat >"$W/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
mode: iptables
iptables:
  localhostNodePorts: false
metricsBindAddress: 127.0.0.1:$(k8s_free_port)
healthzBindAddress: 127.0.0.1:$(k8s_free_port)
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
k8s_bg kube-proxy "$K8S_BIN/kube-proxy" --config "$W/kube-proxy.yaml"
k8s_bg clusterdns "$W/bin/clusterdns" --listen "$GW:53" --server "$K8S_SERVER" --ca "$K8S_CA" \
	--token-file "$W/pki/admin-token"
KUBELET_PORT=$(k8s_free_port)
cat >"$W/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GW
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(k8s_free_port)
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $W/kubelet-ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
clusterDNS: [$GW]
clusterDomain: cluster.local
resolvConf: ""
podLogsDir: $W/pod-logs
maxPods: 16
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
k8s_bg kubelet "$K8S_BIN/kubelet" --config "$W/kubelet.yaml" --kubeconfig "$KUBECONFIG" \
	--hostname-override "$NODE" --node-ip "$GW" --root-dir "$W/kubelet" --cert-dir "$W/kubelet/pki"
k8s_wait 120 "node $NODE Ready" "$KUBECTL" wait --for=condition=Ready "node/$NODE" --timeout=2s ||
	{ k8s_tail kubelet containerd; k8s_die "the node did not become ready"; }
k8s_wait 60 "the default service account" "$KUBECTL" get serviceaccount default ||
	{ k8s_tail kube-controller-manager; k8s_die "no default service account"; }
"$KUBECTL" get nodes -o wide | sed 's/^/  /'

k8s_say "MinIO on $GW:9000 as Service minio.storage; the sample photos in s3://tinct/data"
"$ROOT/deploy/secrets.sh" "$W/secrets" >/dev/null
S3_KEY=$(cat "$W/secrets/s3-access-key")
S3_SECRET=$(cat "$W/secrets/s3-secret-key")
export MINIO_ROOT_USER=$S3_KEY MINIO_ROOT_PASSWORD=$S3_SECRET
k8s_bg minio "$MINIO" server --quiet --address "$GW:9000" --console-address "127.0.0.1:$(k8s_free_port)" "$W/minio"
unset MINIO_ROOT_USER MINIO_ROOT_PASSWORD
"$KUBECTL" create namespace storage >/dev/null
"$KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: storage}
spec:
  ports: [{name: s3, port: 9000, targetPort: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: minio-host
  namespace: storage
  labels: {kubernetes.io/service-name: minio}
addressType: IPv4
ports: [{name: s3, port: 9000, protocol: TCP}]
endpoints: [{addresses: ["$GW"], conditions: {ready: true}}]
EOF
k8s_wait 30 "MinIO" curl -fsS "http://$GW:9000/minio/health/ready" || { k8s_tail minio; k8s_die "MinIO did not start"; }
"$W/bin/tinct" data prepare "$ROOT/data/sample" --out "$W/prepared" --image-size 32 --val 4 --test 4 >"$W/logs/prepare.log" 2>&1 ||
	{ cat "$W/logs/prepare.log" >&2; k8s_die "tinct data prepare failed"; }
TINCT_S3_ENDPOINT=$GW:9000 TINCT_S3_INSECURE=1 AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET \
	"$W/bin/tinct" data push --create-bucket "$W/prepared" s3://tinct/data 2>&1 | tail -n 1 | sed 's/^/  /'

k8s_say "the Secrets, then the base (EPOCHS=$EPOCHS)"
S=$W/secrets
"$KUBECTL" create secret generic tinct-tls --from-file="$S/tls/ca.crt" --from-file="$S/tls/tls.crt" --from-file="$S/tls/tls.key" >/dev/null
"$KUBECTL" create secret generic tinct-cluster --from-file=cluster-secret="$S/cluster-secret" >/dev/null
"$KUBECTL" create secret generic tinct-s3 --from-file=access-key="$S/s3-access-key" --from-file=secret-key="$S/s3-secret-key" >/dev/null
"$KUBECTL" create secret generic tinct-serve --from-file=token="$S/serve-token" >/dev/null
# the test's kustomization: the base unchanged but for what this machine
# needs (the image imported by hand, 2 cores) and a tiny training run
mkdir -p "$W/overlay"
pod_patch() { # KIND NAME [EXTRA-OPS]
	cat <<EOF
  - target: {kind: $1, name: $2}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: Never}
      - {op: replace, path: /spec/template/spec/containers/0/resources/requests/cpu, value: 100m}
${3:-}
EOF
}
co_args=""
for a in -v --step-timeout=60s --setup-timeout=60s --ring-timeout=30s image_size=32 'model.widths=[16,32,48,64]' \
	batch_size=8 "epochs=$EPOCHS" "checkpoint_every=${CHECKPOINT_EVERY:-1}" sample_every=0; do
	co_args+="      - {op: add, path: /spec/template/spec/containers/0/args/-, value: \"$a\"}"$'\n'
done
{
	echo "apiVersion: kustomize.config.k8s.io/v1beta1"
	echo "kind: Kustomization"
	echo "resources: [$(realpath --relative-to="$W/overlay" "$HERE/base")]"
	echo "patches:"
	pod_patch StatefulSet tinct-coordinator "${co_args%$'\n'}"
	pod_patch StatefulSet tinct-worker
	pod_patch Deployment tinct-serve
} >"$W/overlay/kustomization.yaml"
"$KUBECTL" kustomize "$W/overlay" >"$W/applied.yaml"
"$KUBECTL" apply --server-side --field-manager=tinct -f "$W/applied.yaml" 2>&1 | grep -v 'SessionAffinity is ignored' | sed 's/^/  /'

# every coordinator pod's log, followed from when it runs into logs/
# (co-NN-NAME_UID.log: a StatefulSet's new pod has the old one's name)
follow_coordinators() {
	trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
	local p n
	while :; do
		for p in $("$KUBECTL" get pods -l app.kubernetes.io/component=coordinator --field-selector=status.phase=Running \
			-o jsonpath='{range .items[*]}{.metadata.name}_{.metadata.uid}{"\n"}{end}' 2>/dev/null); do
			compgen -G "$W/logs/co-*-$p.log" >/dev/null && continue
			n=$({ compgen -G "$W/logs/co-*.log" || true; } | wc -l)
			"$KUBECTL" logs -f "${p%_*}" >"$(printf '%s/logs/co-%02d-%s.log' "$W" "$n" "$p")" 2>&1 &
		done
		sleep 0.5
	done
}
follow_coordinators &
FOLLOW_PID=$!

# the coordinator pods' logs, oldest pod first
co_log() { cat "$W"/logs/co-*.log 2>/dev/null; }
co_lines() { co_log | wc -l; }
# wait_co REGEX SECONDS [FROM]: the first coordinator log line matching
# REGEX after line FROM of all the coordinator logs so far (in the order
# of the pods' lives); prints it and sets AT to its line number.
wait_co() {
	local re=$1 deadline=$((SECONDS + $2)) from=${3:-0} line
	while ((SECONDS < deadline)); do
		line=$(co_log | tail -n +"$((from + 1))" | grep -n -m 1 -E -- "$re" || true)
		if [[ -n $line ]]; then
			AT=$((from + ${line%%:*}))
			echo "  ${line#*:}" | cut -c 1-200
			return 0
		fi
		sleep 0.5
	done
	co_log | tail -n 20 >&2
	k8s_die "no coordinator line matching /$re/ within $2s"
}
ring_of() { echo "workers=\"?\\[[^] ]+( [^] ]+){$(($1 - 1))}\\]"; }
ready_pods() { # LABEL-SELECTOR N SECONDS: N pods Ready
	local deadline=$((SECONDS + $3)) n
	while ((SECONDS < deadline)); do
		n=$("$KUBECTL" get pods -l "$1" -o jsonpath='{range .items[*]}{.metadata.deletionTimestamp}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
			grep -c '^ True$' || true)
		((n == $2)) && return 0
		sleep 0.5
	done
	"$KUBECTL" get pods -o wide >&2
	k8s_die "want $2 ready pods for $1 within $3s, have ${n:-0}"
}

k8s_say "the coordinator, two workers and the web app pass their readiness probes"
ready_pods app.kubernetes.io/component=coordinator 1 180
ready_pods app.kubernetes.io/component=worker 2 180
ready_pods app.kubernetes.io/component=serve 1 180
"$KUBECTL" get pods -o wide | sed 's/^/  /'
wait_co "ring formed.*$(ring_of 2)" 180
wait_co 'epoch done.*epoch=2 ' 180

k8s_say "delete worker pod tinct-worker-0 mid-run: the StatefulSet recreates it, it rejoins"
uid=$("$KUBECTL" get pod tinct-worker-0 -o jsonpath='{.metadata.uid}')
N=$(co_lines)
"$KUBECTL" delete pod tinct-worker-0 --wait=false | sed 's/^/  /'
wait_co 'worker (lost|dropped|failed).*worker=tinct-worker-0' 60 "$N"
N=$AT
k8s_wait 120 "a new tinct-worker-0" bash -c "[[ \$('$KUBECTL' get pod tinct-worker-0 -o jsonpath='{.metadata.uid}') != '$uid' ]]" ||
	k8s_die "the StatefulSet did not recreate tinct-worker-0"
echo "  tinct-worker-0: pod $uid → $("$KUBECTL" get pod tinct-worker-0 -o jsonpath='{.metadata.uid}')"
wait_co 'worker connected.*worker=tinct-worker-0' 180 "$N"
wait_co "ring formed.*$(ring_of 2)" 180 "$AT"
ready_pods app.kubernetes.io/component=worker 2 120
wait_co 'epoch done' 120 "$AT"

k8s_say "delete the coordinator pod mid-epoch: the StatefulSet starts another when it has ended, which resumes from MinIO"
# a few steps past a checkpoint, so that the old coordinator has steps to
# save that the checkpoint before them does not hold
wait_co 'checkpoint saved.*name=step-[0-9]+' 120 "$(co_lines)"
last=$(co_log | sed -n "${AT}p" | grep -Eo 'name=step-[0-9]+' | grep -Eo '[1-9][0-9]*$')
wait_co "step committed\"? step=$((last + 4)) " 60 "$AT"
old=$("$KUBECTL" get pod tinct-coordinator-0 -o jsonpath='{.metadata.uid}')
N=$(co_lines)
"$KUBECTL" delete pod tinct-coordinator-0 --wait=false | sed 's/^/  /'
wait_co 'training interrupted; checkpoint saved' 150 "$N"
stopped=$(co_log | sed -n "${AT}p" | grep -Eo 'time=[^ ]+' | cut -d= -f2)
wait_co 'msg="?resumed' 180 "$N"
resumed=$(co_log | sed -n "${AT}p" | grep -Eo 'time=[^ ]+' | cut -d= -f2)
wait_co "ring formed.*$(ring_of 2)" 180 "$AT"
ready_pods app.kubernetes.io/component=coordinator 1 120
new=$("$KUBECTL" get pod tinct-coordinator-0 -o jsonpath='{.metadata.uid}')
[[ $new != "$old" ]] || k8s_die "the coordinator pod is still $old"
first=$(head -n 1 "$W"/logs/co-*-tinct-coordinator-0_"$new".log | grep -Eo 'time=[^ ]+' | cut -d= -f2)
echo "  tinct-coordinator-0: pod $old → $new: the old one saved its checkpoint at $stopped, the new one started at $first and resumed at $resumed"
# the StatefulSet starts the new pod only when the old one has ended: the
# two never overlap (a Deployment's did, by 0.1–0.3 s)
(($(date -d "$first" +%s%N) > $(date -d "$stopped" +%s%N))) ||
	k8s_die "the new coordinator started at $first, before the old one had saved at $stopped"

k8s_say "training finishes"
wait_co 'training finished' 600
sleep 1 # the rest of that line and those before it in every log
TOTAL=$(co_log | grep -Eo 'training finished.*step=[0-9]+' | grep -Eo '[0-9]+$' | head -n 1)
STEPS=$(co_log | grep -Eo 'steps_per_epoch=[0-9]+' | head -n 1 | cut -d= -f2)
((TOTAL == EPOCHS * STEPS)) || k8s_die "finished at step $TOTAL, want $EPOCHS×$STEPS"
co_log | grep -Eo 'step committed"? step=[0-9]+' | grep -Eo '[0-9]+$' | sort -n | uniq -c >"$W/steps"
DUP=$(awk '$1 != 1' "$W/steps" | head -n 3)
[[ -z $DUP ]] || k8s_die "steps committed more than once: $DUP"
[[ $(wc -l <"$W/steps") == "$TOTAL" && $(head -n 1 "$W/steps" | awk '{print $2}') == 1 ]] ||
	k8s_die "committed $(wc -l <"$W/steps") distinct steps, want 1..$TOTAL"
echo "  steps 1..$TOTAL committed exactly once each, over $(ls "$W"/logs/co-*.log | wc -l) coordinator pods"

k8s_say "the web app colorizes through its Service"
IP=$("$KUBECTL" get service tinct-serve -o jsonpath='{.spec.clusterIP}')
URL=http://$IP:7860
AUTH="Authorization: Bearer $(cat "$S/serve-token")"
want="\"default\": *\"step-$(printf %09d "$TOTAL")\""
for _ in $(seq 60); do
	curl -fsS -H "$AUTH" "$URL/api/checkpoints" >"$W/ck.json" 2>/dev/null && grep -q "$want" "$W/ck.json" && break
	sleep 1
done
grep -q "$want" "$W/ck.json" || k8s_die "the web app's newest checkpoint is not step $TOTAL: $(cat "$W/ck.json")"
photo=$(ls "$ROOT/data/sample" | grep -Ei '\.jpe?g$' | head -n 1)
curl -fsS -N -H "Origin: $URL" -H "$AUTH" -F image=@"$ROOT/data/sample/$photo" -F steps=10 -F samples=1 \
	"$URL/api/colorize" >"$W/colorize.txt" || k8s_die "colorize request to $URL failed"
grep -q '^event: done' "$W/colorize.txt" || k8s_die "no colorization: $(head -c 300 "$W/colorize.txt")"
echo "  $URL (service tinct-serve) colorized $photo with step-$(printf %09d "$TOTAL")"

k8s_say "k8s-test: OK"
