#!/usr/bin/env bash
# gpu-check: the CUDA backend's check on a machine with an NVIDIA GPU
# (issue 13, docs/gpu.md).
#
# NOT RUN YET. This script was written in a session without a GPU: nothing
# in it has been run on one, and the bindings and the Device it drives have
# only been checked on the CPU (go test ./cuda/...: discovery against fake
# libraries, bindings registered, the kernels' arithmetic through the g++
# shim). Expect the first run to find mistakes; that is what it is for.
#
# It builds nothing: it runs a bin/tinct built beforehand, where Go is:
#
#   CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct
#
# (stripped: about 35 MB instead of 46, so that the tree and the binary stay
# well under the device machine's 64 MiB transfer limit)
#
# and carried to the GPU machine (on this project's device machine:
# run(command="bash scripts/gpu-check.sh", carry=["bin/tinct"],
# timeout_s=300); the whole check takes well under a minute there when it
# works). On that machine the driver is under /usr/local/nvidia and
# python3 holds NVIDIA's wheels (nvidia-cublas, nvidia-cuda-nvrtc,
# nvidia-cudnn-cu13); tinct finds them itself, and TINCT_CUDA_LIBS
# (colon-separated directories) overrides.
#
# Steps, each logged to $OUT/gpu-check.log (OUT defaults to
# ./gpu-check-out):
#   1. the machine: nvidia-smi, python3's site-packages and the nvidia/*/lib
#      folders in them, the loader's idea of libcuda;
#   2. tinct cuda find: where each library is found, or every place tried;
#   3. tinct cuda probe: the GPU as the driver describes it;
#   4. tinct worker join --gpu 0: must answer "found <GPU>, CUDA backend not
#      yet wired into training: see issue 13";
#   5. tinct cuda selftest --gpu 0 --bench: NVRTC compiles the embedded
#      kernels for the GPU's architecture; every kernel and the convolution
#      over cuBLAS run on random inputs and are compared with the Go CPU
#      ops (a table; results also in $OUT/selftest.json); then a 3×3
#      convolution is timed in fp32, tf32 and bf16;
#   6. the same selftest under compute-sanitizer (memcheck), where the tool
#      is there and works (it does not on gVisor machines): out-of-bounds
#      accesses in the kernels.
# Exit status: that of step 5 (0: every comparison passed).
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

say "tinct worker join --gpu 0 (expected: found <GPU>, CUDA backend not yet wired into training: see issue 13)"
run timeout 60 "$BIN" worker join --coordinator 127.0.0.1:1 --gpu 0 --plaintext

say "tinct cuda selftest --gpu 0 --bench"
run timeout 300 "$BIN" cuda selftest --gpu 0 --bench --json "$OUT/selftest.json"
status=$?

if command -v compute-sanitizer >/dev/null 2>&1; then
	say "compute-sanitizer --tool memcheck tinct cuda selftest (not on gVisor)"
	run timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "$BIN" cuda selftest --gpu 0
fi

say "done: selftest exit $status; log in $LOG"
exit "$status"
