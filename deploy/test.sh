#!/usr/bin/env bash
# deploy/test.sh — the compose cluster (deploy/compose.yaml) through real
# faults on this Docker engine:
#
#  1. secrets (deploy/secrets.sh), the sample photos pushed to MinIO, a
#     coordinator and two workers over mutual TLS;
#  2. docker kill a worker, then start it again: it rejoins;
#  3. disconnect the other worker from the network for 20 s (a partition),
#     reconnect it: it rejoins;
#  4. docker restart the coordinator: it checkpoints on SIGTERM and resumes
#     from MinIO (resume=auto); the waiting workers rejoin by themselves;
#  5. scale the workers from 2 to 3 mid-run;
#  6. training finishes; then the web app colorizes a photo with the newest
#     checkpoint.
#
# It asserts from the coordinator's log (both of its lives) that every step
# 1..N was committed exactly once, that every worker container exited 0,
# that the final checkpoint is the last step's, and that the colorization
# came back. Needs the images (make image image-minio; make deploy-test
# builds them) and docker-compose. Environment: EPOCHS (default 24),
# DEPLOY_KEEP=1 keeps the logs. About 3 minutes on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EPOCHS=${EPOCHS:-24}
export COMPOSE_PROJECT_NAME=tinct-test-$$ EPOCHS MIN_WORKERS=2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-deploy-test.XXXXXX")
export TINCT_SECRETS=$WORK/secrets
export SERVE_PORT=$((20000 + RANDOM % 40000))
DC=(docker-compose -f "$ROOT/deploy/compose.yaml")
T0=$SECONDS

say() { printf '\n\033[1m== %s\033[0m (%ds)\n' "$*" $((SECONDS - T0)); }
die() {
	printf 'deploy-test: FAILED: %s\n' "$*" >&2
	exit 1
}
cleanup() {
	local rc=$?
	"${DC[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true
	"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
	if [[ $rc -ne 0 || ${DEPLOY_KEEP:-} == 1 ]]; then
		tail -n 40 "$WORK/compose.log" >&2 || true
		echo "deploy-test: logs in $WORK/compose.log" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# coordinator log lines since line FROM (both of the container's lives)
co_log() { docker logs "$CO" 2>&1 | tail -n +"$((${1:-0} + 1))"; }
co_lines() { docker logs "$CO" 2>&1 | wc -l; }

# wait_co REGEX SECONDS [FROM]: waits for a coordinator log line matching
# REGEX after line FROM; prints it.
wait_co() {
	local re=$1 secs=$2 from=${3:-0} deadline=$((SECONDS + $2)) line
	while ((SECONDS < deadline)); do
		# all of it through grep: with pipefail, a grep -m 1 that stops
		# reading while docker logs still writes fails the pipeline
		# (SIGPIPE) even though it matched
		line=$(co_log "$from" | grep -E -- "$re" || true)
		if [[ -n $line ]]; then
			echo "  ${line%%$'\n'*}" | cut -c 1-220
			return 0
		fi
		sleep 0.5
	done
	co_log "$from" | tail -n 20 >&2
	die "no coordinator line matching /$re/ within ${secs}s"
}

ring_of() { echo "workers=\"?\\[[^] ]+( [^] ]+){$(($1 - 1))}\\]"; }

say "secrets, images and the dataset in MinIO"
"$ROOT/deploy/secrets.sh" "$TINCT_SECRETS" >/dev/null
"${DC[@]}" run --rm setup >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "setup failed"; }
tail -n 1 "$WORK/setup.log"

say "coordinator and 2 workers"
"${DC[@]}" up -d --scale worker=2 coordinator worker >/dev/null 2>&1
CO=$("${DC[@]}" ps -q coordinator)
mapfile -t WS < <("${DC[@]}" ps -q worker)
((${#WS[@]} == 2)) || die "want 2 worker containers, have ${#WS[@]}"
wait_co "ring formed.*$(ring_of 2)" 120
wait_co 'epoch done.*epoch=2 ' 120

say "docker kill a worker, then start it again"
N=$(co_lines)
docker kill "${WS[0]}" >/dev/null
wait_co 'worker lost' 30 "$N"
docker start "${WS[0]}" >/dev/null
wait_co "ring formed.*$(ring_of 2)" 120 "$N"

say "partition: the other worker off the network for 20 s"
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "${WS[1]}")
N=$(co_lines)
docker network disconnect "$NET" "${WS[1]}"
sleep 20
docker network connect "$NET" "${WS[1]}"
wait_co 'level=(WARN|ERROR).*(worker (lost|failed|dropped)|memberlist)' 5 "$N"
wait_co "ring formed.*$(ring_of 2)" 180 "$N"
wait_co 'epoch done' 120 "$N"

say "restart the coordinator (SIGTERM, checkpoint, resume from MinIO)"
N=$(co_lines)
docker restart -t 60 "$CO" >/dev/null
wait_co 'msg="?resumed' 120 "$N"
wait_co "ring formed.*$(ring_of 2)" 180 "$N"

say "scale the workers from 2 to 3"
N=$(co_lines)
"${DC[@]}" up -d --no-recreate --scale worker=3 worker >/dev/null 2>&1
wait_co "ring formed.*$(ring_of 3)" 180 "$N"

say "training finishes"
wait_co 'training finished' 600
docker wait "$CO" >/dev/null
TOTAL=$(co_log | grep -Eo 'training finished.*step=[0-9]+' | grep -Eo '[0-9]+$' | tail -n 1)
STEPS=$(co_log | grep -Eo 'steps_per_epoch=[0-9]+' | head -n 1 | cut -d= -f2)
((TOTAL == EPOCHS * STEPS)) || die "finished at step $TOTAL, want $EPOCHS×$STEPS"
# every step once, over both of the coordinator's lives
co_log | grep -Eo 'step committed"? step=[0-9]+' | grep -Eo '[0-9]+$' | sort -n | uniq -c >"$WORK/steps"
DUP=$(awk '$1 != 1' "$WORK/steps" | head -n 3)
[[ -z $DUP ]] || die "steps committed more than once: $DUP"
[[ $(wc -l <"$WORK/steps") == "$TOTAL" && $(head -n 1 "$WORK/steps" | awk '{print $2}') == 1 ]] || die "committed $(wc -l <"$WORK/steps") distinct steps, want 1..$TOTAL"
echo "  steps 1..$TOTAL committed exactly once each"
for w in $("${DC[@]}" ps -q worker); do
	docker wait "$w" >/dev/null
	rc=$(docker inspect -f '{{.State.ExitCode}}' "$w")
	((rc == 0)) || die "worker $w exited $rc"
done
echo "  every worker exited 0"

say "the web app colorizes with the newest checkpoint"
"${DC[@]}" up -d serve >/dev/null 2>&1
URL=http://127.0.0.1:$SERVE_PORT
AUTH="Authorization: Bearer $(cat "$TINCT_SECRETS/serve-token")"
for _ in $(seq 60); do curl -fsS -H "$AUTH" "$URL/api/checkpoints" >"$WORK/ck.json" 2>/dev/null && break || sleep 0.5; done
grep -q "\"default\": *\"step-$(printf %09d "$TOTAL")\"" "$WORK/ck.json" || die "the web app's newest checkpoint is not step $TOTAL: $(cat "$WORK/ck.json")"
curl -fsS -N -H "Origin: $URL" -H "$AUTH" \
	-F image=@"$ROOT/data/sample/$(ls "$ROOT/data/sample" | grep -Ei '\.jpe?g$' | head -n 1)" -F steps=10 -F samples=1 \
	"$URL/api/colorize" >"$WORK/colorize.txt" || die "colorize request failed"
grep -q '^event: done' "$WORK/colorize.txt" || die "no colorization: $(head -c 300 "$WORK/colorize.txt")"
echo "  colorized with step-$(printf %09d "$TOTAL")"

say "deploy-test: OK"
