#!/usr/bin/env bash
# bench/scaling.sh — how a training step's time grows with image size and
# batch, on each compute backend: `tinct bench train` (median of STEPS
# steps after a warm-up) for sizes 32²–256² at batch 8 and batches 1–64 at
# 64². Prints a markdown table (ms per step and ms per image) and writes
# bench/scaling.json.
#
#   go build -o bin/tinct ./cmd/tinct && bench/scaling.sh
#   BACKENDS=onednn SIZES="64 128" BATCHES="8" bench/scaling.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINCT=${TINCT:-$ROOT/bin/tinct}
BACKENDS=${BACKENDS:-go onednn}
SIZES=${SIZES:-32 64 128 256}
BATCHES=${BATCHES:-1 2 4 8 16 32 64}
BATCH_SIZE=${BATCH_SIZE:-64} # image side of the batch sweep
STEPS=${STEPS:-2}
OUT=${OUT:-$ROOT/bench/scaling.json}

runs=()
for s in $SIZES; do runs+=("$s 8"); done
for b in $BATCHES; do
	[ "$b" = 8 ] && [[ " $SIZES " == *" $BATCH_SIZE "* ]] && continue
	runs+=("$BATCH_SIZE $b")
done

echo "| image | batch | $(for b in $BACKENDS; do printf '%s ms/step | %s ms/image | ' "$b" "$b"; done)"
echo "|---:|---:|$(for b in $BACKENDS; do printf -- '---:|---:|'; done)"
echo "[" >"$OUT.tmp"
first=1
for r in "${runs[@]}"; do
	set -- $r
	size=$1 batch=$2
	line="| $size² | $batch |"
	for be in $BACKENDS; do
		ms=$(TINCT_BACKEND=$be "$TINCT" bench train --size "$size" --batch "$batch" --steps "$STEPS" 2>/dev/null | tail -1 | sed -n 's/^ms_per_step=//p')
		[ -n "$ms" ] || { echo "bench/scaling.sh: $be $size² batch $batch failed" >&2; exit 1; }
		line+=" $ms | $(awk -v m="$ms" -v b="$batch" 'BEGIN {printf "%.1f", m/b}') |"
		[ $first = 1 ] || echo "," >>"$OUT.tmp"
		first=0
		printf '  {"backend": "%s", "size": %d, "batch": %d, "steps": %d, "ms_per_step": %s}' "$be" "$size" "$batch" "$STEPS" "$ms" >>"$OUT.tmp"
	done
	echo "$line"
done
printf '\n]\n' >>"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
