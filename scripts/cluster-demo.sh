#!/usr/bin/env bash
# cluster-demo: a training cluster on this machine with its data and
# checkpoints in an object store (a MinIO server on 127.0.0.1).
#
#   make cluster-demo            (or: scripts/cluster-demo.sh)
#
# 1. builds bin/tinct and starts MinIO (from $TINCT_MINIO or
#    $(go env GOPATH)/bin/minio; make minio builds it) on a free port with a
#    temporary data folder;
# 2. prepares the bundled photos (data/sample) at 32×32 and uploads them to
#    s3://tinct-demo/data (tinct data push --create-bucket);
# 3. makes the cluster's CA and a certificate (tinct cluster certs), then
#    starts tinct coordinator start with dataset=s3://tinct-demo/data and
#    store=s3://tinct-demo/checkpoints, --min-workers 2, and two workers, each
#    in a folder of its own so each fetches the dataset into its own cache;
# 4. after two epochs kills one worker with SIGKILL; the coordinator drops it
#    and, as --min-workers is 2, waits for a replacement, which joins (and
#    fetches the dataset) and the ring re-forms: training continues;
# 5. stops the coordinator with SIGTERM (it checkpoints; the workers stay up
#    and wait for it), starts it again on the same address with resume=true:
#    the waiting workers rejoin by themselves and training continues from
#    the newest checkpoint in the object store to the end, where every worker
#    exits 0;
# 6. prints a summary. Every process it starts is killed on exit.
#
# Environment: DEMO_EPOCHS (default 10), DEMO_KEEP=1 keeps the work folder.
# Takes about 15 s on 2 cores after the build (14 s on 2026-12-06) (the model is tiny). CI runs it
# (.ci/run: make cluster-demo, before make test); make test does not.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
EPOCHS=${DEMO_EPOCHS:-10}
# the cluster secret comes from the environment (or --secret-file), never
# from the command line, where ps would show it
export TINCT_CLUSTER_SECRET=tinct-demo-secret-$RANDOM$RANDOM
BUCKET=tinct-demo

# headings in bold on a terminal, plain in a log
if [[ -t 1 ]]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
# what a log line says, without its timestamp and quotes
show() { sed -E 's/^time=[^ ]+ level=[A-Z]+ //; s/msg="([^"]*)"/\1/; s/^msg=//' ; }
die() { printf 'cluster-demo: FAILED: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-cluster-demo.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ $rc -ne 0 || ${DEMO_KEEP:-} == 1 ]]; then
		echo "cluster-demo: logs and data kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME DIR CMD...: runs CMD in DIR in the background, output to
# $WORK/NAME.log; sets LAST_PID.
start() {
	local name=$1 dir=$2
	shift 2
	mkdir -p "$dir"
	(cd "$dir" && exec "$@") >"$WORK/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# wait_log FILE REGEX SECONDS [PID]: waits until FILE has a line matching
# REGEX; fails after SECONDS, or when PID exits first.
wait_log() {
	local file=$1 re=$2 secs=$3 pid=${4:-}
	local deadline=$((SECONDS + secs))
	until grep -Eq -- "$re" "$file" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$file" >&2 || true
			die "no line matching /$re/ in $(basename "$file") within ${secs}s"
		fi
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$file" >&2 || true
			die "$(basename "$file" .log) exited before /$re/"
		fi
		sleep 0.2
	done
}

# wait_pid PID: waits for PID (a child of this shell); its exit status in RC.
wait_pid() {
	RC=0
	wait "$1" || RC=$?
}

free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port"
}

say "build bin/tinct"
go build -o bin/tinct ./cmd/tinct
TINCT=$ROOT/bin/tinct

MINIO=${TINCT_MINIO:-$(go env GOPATH)/bin/minio}
[[ -x $MINIO ]] || die "no MinIO server at $MINIO: build it with make minio (go install github.com/minio/minio@…, ~14 minutes), or set TINCT_MINIO"

say "start MinIO on 127.0.0.1"
S3PORT=$(free_port)
CONSOLE=$(free_port)
export AWS_ACCESS_KEY_ID=tinct-demo-user AWS_SECRET_ACCESS_KEY=tinct-demo-password AWS_SESSION_TOKEN=
export TINCT_S3_ENDPOINT=127.0.0.1:$S3PORT TINCT_S3_INSECURE=1
start minio "$WORK" env MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_UPDATE=off MINIO_BROWSER=off \
	"$MINIO" server --quiet --address "127.0.0.1:$S3PORT" --console-address "127.0.0.1:$CONSOLE" "$WORK/minio-data"
MINIO_PID=$LAST_PID
for i in $(seq 300); do
	# live answers before the object layer is up, and says so in a header
	curl -fsS -o /dev/null -D "$WORK/minio-health" "http://127.0.0.1:$S3PORT/minio/health/live" 2>/dev/null &&
		! grep -qi '^x-minio-server-status: *offline' "$WORK/minio-health" && break
	kill -0 "$MINIO_PID" 2>/dev/null || { cat "$WORK/minio.log" >&2; die "MinIO exited"; }
	((i < 300)) || die "MinIO did not answer within 60s"
	sleep 0.2
done
echo "MinIO at http://$TINCT_S3_ENDPOINT (data in $WORK/minio-data)"

say "prepare data/sample at 32×32 and upload it to s3://$BUCKET/data"
"$TINCT" data prepare data/sample --out "$WORK/prepared" --image-size 32 --val 4 --test 4 2>"$WORK/prepare.log"
"$TINCT" data push --create-bucket "$WORK/prepared" "s3://$BUCKET/data"

KEYS=(dataset=s3://$BUCKET/data store=s3://$BUCKET/checkpoints output_dir=out
	image_size=32 "model.widths=[16,32,48,64]" batch_size=8 epochs=$EPOCHS
	checkpoint_every=1 sample_every=0 seed=7)
FLAGS=(--threads 1 --wait 120s --step-timeout 60s --setup-timeout 60s --ring-timeout 30s)

# coordinator NAME MIN_WORKERS PORT [KEY=VALUE...]: starts a coordinator
# listening on 127.0.0.1:PORT; sets CO_PID, CO_LOG and CO_ADDR.
coordinator() {
	local name=$1 min=$2 port=$3
	shift 3
	start "$name" "$WORK/coordinator" "$TINCT" coordinator start "${FLAGS[@]}" --listen "127.0.0.1:$port" --min-workers "$min" "${KEYS[@]}" "$@"
	CO_PID=$LAST_PID CO_LOG=$WORK/$name.log CO_ADDR=127.0.0.1:$port
	wait_log "$CO_LOG" 'coordinator listening for workers' 60 "$CO_PID"
}

# worker NAME: starts a worker in a folder of its own (its own dataset
# cache under out/datasets/); sets W_PID.
worker() {
	start "$1" "$WORK/$1" "$TINCT" worker join --threads 1 --coordinator "$CO_ADDR" --name "$1"
	W_PID=$LAST_PID
}

say "make the cluster's TLS certificates (one for 127.0.0.1, shared by every node here)"
"$TINCT" cluster certs --out "$WORK/certs" --host 127.0.0.1
export TINCT_TLS_DIR=$WORK/certs/127.0.0.1

say "start the coordinator (--min-workers 2) and workers w0, w1"
T0=$SECONDS
CO_PORT=$(free_port)
coordinator coordinator 2 "$CO_PORT"
worker w0
W0=$W_PID
worker w1
W1=$W_PID
wait_log "$CO_LOG" 'ring formed.*workers="?\[w[01] w[01]\]' 120 "$CO_PID"
echo "coordinator: $(grep -E 'dataset fetched' "$CO_LOG" | head -n 1 | show)"
grep -E 'ring formed' "$CO_LOG" | tail -n 1 | show
for w in w0 w1; do
	wait_log "$WORK/$w.log" 'dataset fetched' 5
	echo "$w: $(grep -E 'dataset fetched' "$WORK/$w.log" | head -n 1 | show)"
done

say "after epoch 2, kill w1 with SIGKILL"
wait_log "$CO_LOG" 'epoch done.*epoch=2 ' 300 "$CO_PID"
grep -E 'msg="?checkpoint saved.*epoch=2 ' "$CO_LOG" | show || true
# (waited for here, so that bash does not announce the kill as an error)
{ kill -9 "$W1" && wait "$W1"; } 2>/dev/null || true
echo "killed w1 (pid $W1) with SIGKILL at $(date +%T)"
wait_log "$CO_LOG" 'worker lost.*worker=w1' 60 "$CO_PID"
grep -E 'worker lost' "$CO_LOG" | head -n 1 | show
# --min-workers 2: the coordinator waits for a second worker; w2 replaces w1.
wait_log "$CO_LOG" 'waiting for workers"? have=1' 60 "$CO_PID"
grep -E 'waiting for workers' "$CO_LOG" | tail -n 1 | show
worker w2
W2=$W_PID
wait_log "$CO_LOG" 'ring formed.*workers="?\[(w0 w2|w2 w0)\]' 120 "$CO_PID"
echo "re-formed: $(grep -E 'ring formed' "$CO_LOG" | tail -n 1 | show)"
wait_log "$CO_LOG" 'epoch done.*epoch=3 ' 300 "$CO_PID"
echo "training continues: $(grep -E 'epoch done.*epoch=3 ' "$CO_LOG" | show)"

say "stop the coordinator (SIGTERM); the workers wait; resume it on the same address"
kill -TERM "$CO_PID"
wait_pid "$CO_PID"
((RC == 0)) || die "coordinator exited $RC after SIGTERM"
for w in w0 w2; do
	wait_log "$WORK/$w.log" 'waiting for it to come back' 30
done
kill -0 "$W0" 2>/dev/null && kill -0 "$W2" 2>/dev/null || die "a worker exited when the coordinator stopped"
echo "w0, w2: $(grep -Eo 'msg="?the coordinator was stopped[^"]*' "$WORK/w0.log" | head -n 1 | sed 's/^msg="*//')"
STOP_LINE=$(grep -E 'msg="?checkpoint saved' "$CO_LOG" | tail -n 1)
echo "last checkpoint before the stop: $(show <<<"$STOP_LINE")"
STOP_STEP=$(grep -Eo 'step=[0-9]+' <<<"$STOP_LINE" | tail -n 1 | cut -d= -f2)
coordinator coordinator-resumed 2 "$CO_PORT" resume=true
wait_log "$CO_LOG" 'msg="?resumed' 60 "$CO_PID"
RESUME_LINE=$(grep -E 'msg="?resumed' "$CO_LOG" | head -n 1)
show <<<"$RESUME_LINE"
RESUME_STEP=$(grep -Eo 'step=[0-9]+' <<<"$RESUME_LINE" | tail -n 1 | cut -d= -f2)
[[ $RESUME_STEP == "$STOP_STEP" ]] || die "resumed at step $RESUME_STEP, but the newest checkpoint was at step $STOP_STEP"
wait_log "$CO_LOG" 'ring formed' 120 "$CO_PID"
echo "rejoined: $(grep -E 'ring formed' "$CO_LOG" | head -n 1 | grep -Eo 'workers="?\[[^]]*\]"?')"
wait_pid "$CO_PID"
((RC == 0)) || { tail -n 20 "$CO_LOG" >&2; die "resumed coordinator exited $RC"; }
for w in w0 w2; do
	pid=$W0
	[[ $w == w2 ]] && pid=$W2
	wait_pid "$pid"
	((RC == 0)) || { tail -n 20 "$WORK/$w.log" >&2; die "worker $w exited $RC after the coordinator finished"; }
done
FINAL=$(grep -E 'msg="?training finished' "$CO_LOG" | tail -n 1)
[[ -n $FINAL ]] || die "the resumed coordinator did not finish"

say "summary"
cat <<EOF
object store      MinIO at http://$TINCT_S3_ENDPOINT, bucket $BUCKET
cluster traffic   mutual TLS under the CA in $WORK/certs (coordinator: $(grep -Eo 'tls=\S+' "$WORK/coordinator.log" | head -n 1))
dataset           s3://$BUCKET/data ($(grep -c . <(ls "$WORK/prepared")) files), fetched by the coordinator and by each worker into its own cache
first ring        $(grep -E 'ring formed' "$WORK/coordinator.log" | head -n 1 | grep -Eo 'workers="?\[[^]]*\]"?')
worker killed     w1 (SIGKILL) after epoch 2: $(grep -E 'worker lost' "$WORK/coordinator.log" | head -n 1 | grep -Eo 'worker=\S+')
ring re-formed    $(grep -E 'ring formed' "$WORK/coordinator.log" | tail -n 1 | grep -Eo '(generation|workers|step)=("[^"]*"|\S+)' | tr '\n' ' ')
stopped           at step $STOP_STEP (SIGTERM; checkpoint in s3://$BUCKET/checkpoints)
resumed           $(grep -Eo 'checkpoint=\S+' <<<"$RESUME_LINE") at step $RESUME_STEP; w0 and w2 rejoined by themselves
finished          $(grep -Eo 'step=[0-9]+' <<<"$FINAL") after $EPOCHS epochs; $((SECONDS - T0)) s of training in all
epoch losses      $(cat "$WORK/coordinator.log" "$WORK/coordinator-resumed.log" | grep -Eo 'epoch done.*epoch=[0-9]+ .*mean_loss=[0-9.]+' | grep -Eo 'mean_loss=[0-9.]+' | cut -d= -f2 | tr '\n' ' ')
EOF
echo "cluster-demo: OK"
