#!/usr/bin/env bash
# demo-picture: the README's first picture. Colorizes held-out photos with
# the bundled demo model at their own size (tinct colorize, no checkpoint)
# and lays out gray | colorized | truth, one photo a row, into
# docs/images/demo.png.
#
#   scripts/demo-picture.sh [N]
#
# The photos are the first N (default 4) of the demo run's test split, in
# the order configs/demo.yaml's split puts them (data prepare's
# held-out.txt), not picked by how they came out. Needs /usr/bin/python3
# with PIL (python3-pil, which python3-torch installs).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-4}
tinct=${TINCT:-./bin/tinct}
[ -x "$tinct" ] || go build -o "$tinct" ./cmd/tinct
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tinct" data prepare data/sample --out "$work/set" --image-size 64 --val 4 --test 12 --crops 5 --seed 42 > /dev/null
mapfile -t photos < <(awk -F'\t' '$1 == "test" {print $2}' "$work/set/held-out.txt" | head -n "$n")
"$tinct" colorize "${photos[@]}" --steps 20 --out "$work/out" > /dev/null
/usr/bin/python3 - "$work/out" docs/images/demo.png "${photos[@]}" <<'PY'
import sys, os
from PIL import Image, ImageOps
out, dst, photos = sys.argv[1], sys.argv[2], sys.argv[3:]
W, pad = 300, 6
rows = []
for p in photos:
    base = os.path.splitext(os.path.basename(p))[0]
    truth = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
    gray = truth.convert("L").convert("RGB")
    col = Image.open(os.path.join(out, base + "-1.png")).convert("RGB")
    h = round(truth.height * W / truth.width)
    rows.append([im.resize((W, h), Image.LANCZOS) for im in (gray, col, truth)])
height = sum(r[0].height for r in rows) + pad * (len(rows) - 1)
canvas = Image.new("RGB", (3 * W + 2 * pad, height), "white")
y = 0
for r in rows:
    for i, im in enumerate(r):
        canvas.paste(im, (i * (W + pad), y))
    y += r[0].height + pad
canvas.save(dst, optimize=True)
print(dst, canvas.size)
PY
