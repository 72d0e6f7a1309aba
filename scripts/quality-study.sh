#!/usr/bin/env bash
# quality-study: what makes the samples over-saturated? Scores one checkpoint
# on one held-out split with tinct eval, changing one sampler setting at a
# time: DDIM steps (10/20/50/100), x̂0 clipping, EMA or live weights.
#
#   scripts/quality-study.sh CHECKPOINT DATA [OUT.md]
#
# CHECKPOINT is a store, a checkpoint directory (needed for the live-weights
# row) or a weights file; DATA a prepared dataset (its test split is scored)
# or a folder of photos. Each row is one tinct eval run with the same seed
# and 4 samples per image; the table (markdown) goes to OUT.md (default
# outputs/quality-study.md) and every run's JSON beside it. docs/quality.md
# holds the results and what they say.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: scripts/quality-study.sh CHECKPOINT DATA [OUT.md]}
data=${2:?usage: scripts/quality-study.sh CHECKPOINT DATA [OUT.md]}
out=${3:-outputs/quality-study.md}
tinct=${TINCT:-./bin/tinct}
[ -x "$tinct" ] || go build -o "$tinct" ./cmd/tinct
mkdir -p "$(dirname "$out")"
dir="${out%.md}"
mkdir -p "$dir"

{
  echo "# Sampler study: $ckpt on $data"
  echo
  echo "One seed, 4 samples per image; every row is one tinct eval (JSON in $dir/)."
  echo
} > "$out"

row() { # name, eval flags...
  local name=$1
  shift
  echo "== $name" >&2
  local start=$SECONDS
  "$tinct" eval --checkpoint "$ckpt" --data "$data" --samples 4 --seed 1 --out "$dir/$name.json" "$@" > "$dir/$name.txt"
  {
    echo "## $name ($*, $((SECONDS - start)) s)"
    echo
    cat "$dir/$name.txt"
    echo
  } >> "$out"
}

for steps in 10 20 50 100; do
  row "ema-noclip-steps-$steps" --steps "$steps" --clip=false
  row "ema-clip-steps-$steps" --steps "$steps" --clip
done
if [ -d "$ckpt" ]; then
  row "live-noclip-steps-20" --steps 20 --weights live --clip=false
  row "live-clip-steps-20" --steps 20 --weights live --clip
fi
echo "wrote $out" >&2
