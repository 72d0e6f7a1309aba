#!/usr/bin/env bash
# gpu-check: the CUDA backend's check on a machine with an NVIDIA GPU
# (issue 13, docs/gpu.md).
#
# NOT RUN YET. This script was written in sessions without a GPU: nothing
# in it has been run on one. The kernels' arithmetic and the whole device
# network (cuda/gpunet: forward, loss, gradients, Adam) have only been
# checked on the CPU, through the g++ shim (go test ./cuda/... ./worker);
# the bindings, the device's memory and streams, NVRTC and cuBLAS have never
# run. Expect the first run to find mistakes; that is what it is for.
#
# It builds nothing: it runs a bin/tinct built beforehand, where Go is:
#
#   CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct
#
# (stripped, so that the tree and the binary stay well under the device
# machine's 64 MiB transfer limit) and carried to the GPU machine (on this
# project's device machine: run(command="bash scripts/gpu-check.sh",
# carry=["bin/tinct"], timeout_s=540)). On that machine the driver is under
# /usr/local/nvidia and python3 holds PyTorch and NVIDIA's wheels
# (nvidia-cublas, nvidia-cuda-nvrtc, nvidia-cudnn-cu13); tinct finds them
# itself, and TINCT_CUDA_LIBS (colon-separated directories) overrides.
#
# Steps, each logged to $OUT/gpu-check.log (OUT defaults to
# ./gpu-check-out):
#   1. the machine: nvidia-smi, python3's site-packages and the nvidia/*/lib
#      folders in them, the loader's idea of libcuda;
#   2. tinct cuda find / probe: where each library is, the GPU;
#   3. tinct cuda selftest --gpu 0 --precision fp32 --bench: NVRTC compiles
#      the embedded kernels; every kernel and the convolution over cuBLAS are
#      compared with the Go CPU ops, then the whole network on the device
#      (forward, loss, every gradient, BatchNorm buffers, 3 Adam steps) with
#      the CPU model; a 3x3 convolution is timed in fp32, tf32 and bf16
#      ($OUT/selftest.json; this step's status is the script's);
#   4. the same selftest in tf32 and bf16: the differences those products
#      make (expected to exceed the fp32 tolerances; the table says by how
#      much) ($OUT/selftest-tf32.json, selftest-bf16.json);
#   5. speed, tinct against PyTorch eager on the same card in the same run
#      (testdata/reference/bench.py --device cuda): a training step at 128²
#      with batch 32, 64 and 128, a forward call, a 20-step colorization, in
#      tf32; peak device memory sampled with nvidia-smi ($OUT/bench.txt);
#   6. a short real training run, tinct train device=cuda:0 with configs/sample.yaml
#      (the bundled photos at 64²), 3 epochs, and a colorization with its checkpoint
#      on the GPU ($OUT/train.log);
#   7. the selftest under compute-sanitizer (memcheck), where the tool is
#      there and works: out-of-bounds accesses in the kernels.
set -u -o pipefail

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
BIN=${TINCT_BIN:-bin/tinct}
LOG=$OUT/gpu-check.log
: >"$LOG"

say() { printf '\n== %s\n' "$*" | tee -a "$LOG"; }
run() { # run CMD…: log its output and status; never stops the script
	"$@" 2>&1 | tee -a "$LOG"
	local rc=${PIPESTATUS[0]}
	echo "(exit $rc)" | tee -a "$LOG"
	return "$rc"
}

if [ ! -x "$BIN" ]; then
	echo "gpu-check: no $BIN; build it where Go is: CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct" | tee -a "$LOG"
	exit 2
fi

say "machine"
run date -u
run uname -a
run "$BIN" version
run nvidia-smi
run bash -c 'ldconfig -p | grep -E "libcuda\.so|libnvrtc|libcublas|libcudnn\.so" || echo "(none in the loader cache)"'
run bash -c 'ls -d /usr/local/nvidia/lib* /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null || true'
run python3 -c 'import site, sys; print(sys.executable); print("\n".join(site.getsitepackages()))'
run bash -c 'for s in $(python3 -c "import site; print(\" \".join(site.getsitepackages()))"); do ls -d "$s"/nvidia/*/lib 2>/dev/null && ls "$s"/nvidia/*/lib | grep -E "nvrtc|cublas|cudnn\.so" ; done; true'

say "tinct cuda find"
run timeout 120 "$BIN" cuda find

say "tinct cuda probe --gpu 0"
run timeout 60 "$BIN" cuda probe --gpu 0

say "tinct cuda selftest --gpu 0 --precision fp32 --bench"
run timeout 240 "$BIN" cuda selftest --gpu 0 --precision fp32 --bench --json "$OUT/selftest.json"
status=$?

for p in tf32 bf16; do
	say "tinct cuda selftest --gpu 0 --precision $p (differences expected beyond the fp32 tolerances)"
	run timeout 120 "$BIN" cuda selftest --gpu 0 --precision "$p" --json "$OUT/selftest-$p.json"
done

say "speed: tinct --gpu 0 against PyTorch eager on the same card (tf32)"
BENCH=$OUT/bench.txt
: >"$BENCH"
peak() { # peak CMD…: run CMD while sampling the GPU's used memory; print the peak
	local f
	f=$(mktemp)
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$f" 2>/dev/null &
	local pid=$!
	"$@" 2>&1 | tee -a "$LOG" | tail -1
	local rc=${PIPESTATUS[0]}
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	echo "  peak device memory $(sort -n "$f" | tail -1) MiB (nvidia-smi, whole GPU), exit $rc"
	rm -f "$f"
}
for b in 32 64 128; do
	echo "train 128² batch $b" | tee -a "$BENCH"
	peak timeout 120 "$BIN" bench train --gpu 0 --size 128 --batch "$b" --steps 5 | sed 's/^/  tinct   /' | tee -a "$BENCH"
	peak timeout 120 python3 testdata/reference/bench.py train --device cuda --size 128 --batch "$b" --steps 5 | sed 's/^/  pytorch /' | tee -a "$BENCH"
done
echo "forward 128² batch 1" | tee -a "$BENCH"
peak timeout 60 "$BIN" bench forward --gpu 0 --size 128 --calls 20 | sed 's/^/  tinct   /' | tee -a "$BENCH"
peak timeout 60 python3 testdata/reference/bench.py forward --device cuda --size 128 --calls 20 | sed 's/^/  pytorch /' | tee -a "$BENCH"
echo "colorize 128², 20 steps" | tee -a "$BENCH"
peak timeout 60 "$BIN" bench colorize --gpu 0 --size 128 --steps 20 --images 5 | sed 's/^/  tinct   /' | tee -a "$BENCH"
peak timeout 60 python3 testdata/reference/bench.py colorize --device cuda --size 128 --steps 20 --images 5 | sed 's/^/  pytorch /' | tee -a "$BENCH"

say "a short training run on the GPU (data/sample at 64², 3 epochs) and a colorization with it"
TR=$OUT/train
run timeout 240 "$BIN" train --config configs/sample.yaml device=cuda:0 epochs=3 sample_every=3 checkpoint_every=3 \
	output_dir="$TR" store="$TR/checkpoints" 2>&1 | tee "$OUT/train.log" >/dev/null
run timeout 60 "$BIN" colorize --gpu 0 --checkpoint "$TR/checkpoints" --steps 20 --samples 2 --out "$OUT/colorized" data/sample/fields0.jpg

if command -v compute-sanitizer >/dev/null 2>&1; then
	say "compute-sanitizer --tool memcheck tinct cuda selftest (not on gVisor)"
	run timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "$BIN" cuda selftest --gpu 0
fi

say "done: selftest exit $status; log in $LOG, speed in $BENCH"
exit "$status"
