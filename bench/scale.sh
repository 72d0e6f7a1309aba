#!/usr/bin/env bash
# bench/scale.sh — step time and all-reduce time of the compose cluster
# (deploy/compose.yaml, the full-width U-Net) for 1–4 workers, at 64² and
# 128², with every container's link shaped to a bandwidth by tc (tbf, from
# the host through nsenter: the images need no tc and no NET_ADMIN).
#
#   make image image-minio && bench/scale.sh            # all of it
#   SIZES="64" RATES="1gbit" WORKERS="1 2" bench/scale.sh
#
# Each worker gets 8 images a step (batch_size = 8·N: weak scaling). The
# coordinator's debug log gives each step's wall time and the time the
# slowest worker spent in ring calls after its backward pass; the first
# STEPS_SKIP steps (warm-up, tc being applied) are dropped and the medians
# of the rest printed, as a markdown table and as JSON in bench/scale.json.
# The kernel here has no netem, so no latency is added: the links have the
# bandwidth asked for and container-loopback latency (tens of µs).
# Needs root (nsenter), docker and docker-compose.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-64 128}
RATES=${RATES:-1gbit 10gbit}
WORKERS=${WORKERS:-1 2 3 4}
EPOCHS=${EPOCHS:-2}
STEPS_SKIP=${STEPS_SKIP:-3}
OUT=${OUT:-$ROOT/bench/scale.json}
export COMPOSE_PROJECT_NAME=tinct-scale-$$ MODEL_WIDTHS="[32,64,96,128]"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-scale.XXXXXX")
export TINCT_SECRETS=$WORK/secrets
DC=(docker-compose -f "$ROOT/deploy/compose.yaml")
trap '"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
"$ROOT/deploy/secrets.sh" "$TINCT_SECRETS" >/dev/null

# shape RATE CONTAINER...: every container's eth0 egress to RATE
shape() {
	local rate=$1
	shift
	for c in "$@"; do
		nsenter -t "$(docker inspect -f '{{.State.Pid}}' "$c")" -n tc qdisc replace dev eth0 root tbf rate "$rate" burst 1mb latency 50ms
	done
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) {print "nan"} else if (NR % 2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

echo "| image | link | workers | batch | step s | ring s (after backward) | images/s |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
echo "[" >"$OUT.tmp"
first=1
for size in $SIZES; do
	for rate in $RATES; do
		for n in $WORKERS; do
			"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
			export IMAGE_SIZE=$size BATCH_SIZE=$((8 * n)) MIN_WORKERS=$n EPOCHS
			"${DC[@]}" run --rm setup >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; exit 1; }
			"${DC[@]}" up -d --scale worker="$n" coordinator worker >/dev/null 2>&1
			co=$("${DC[@]}" ps -q coordinator)
			mapfile -t ws < <("${DC[@]}" ps -q worker)
			shape "$rate" "$co" "${ws[@]}"
			docker wait "$co" >/dev/null
			docker logs "$co" >"$WORK/co.log" 2>&1
			grep -q 'training finished' "$WORK/co.log" || { tail -n 20 "$WORK/co.log" >&2; exit 1; }
			grep -E 'step committed' "$WORK/co.log" | tail -n +"$((STEPS_SKIP + 1))" >"$WORK/steps"
			step=$(grep -Eo ' seconds=[0-9.e-]+' "$WORK/steps" | cut -d= -f2 | median)
			ring=$(grep -Eo 'ring_seconds=[0-9.e-]+' "$WORK/steps" | cut -d= -f2 | median)
			steps=$(wc -l <"$WORK/steps")
			ips=$(awk -v b=$((8 * n)) -v s="$step" 'BEGIN {printf "%.1f", b / s}')
			printf '| %d² | %s | %d | %d | %.3f | %.3f | %s |\n' "$size" "$rate" "$n" $((8 * n)) "$step" "$ring" "$ips"
			((first)) || echo "," >>"$OUT.tmp"
			first=0
			printf '  {"image_size": %d, "link": "%s", "workers": %d, "batch": %d, "steps_measured": %d, "step_seconds": %s, "ring_seconds": %s}' \
				"$size" "$rate" "$n" $((8 * n)) "$steps" "$step" "$ring" >>"$OUT.tmp"
		done
	done
done
printf '\n]\n' >>"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
