#!/usr/bin/env bash
# gpu-check-dry: CI's dry run of scripts/gpu-check.sh, without a GPU
# (issue 20). It runs the GPU check as the device machine would, with a
# CGO_ENABLED=0 bin/tinct, against fake NVIDIA libraries built from
# cuda/testdata/fake*.c: a libcuda.so.1 (FAKE_CUDA_OK=1), libnvrtc,
# libcublasLt and libcublas whose every call succeeds, checks its arguments
# as the real library would (handles, contexts, allocation bounds of every
# copy, memset, kernel pointer and product operand, launch dimensions...)
# and is recorded in FAKE_CUDA_LOG, a misuse as a VIOLATION line. With a
# fake nvidia-smi on PATH and no compute-sanitizer.
#
#   make gpu-check-dry        (or: scripts/gpu-check-dry.sh)
#
# The fakes compute nothing, so the self-test's comparisons cannot pass.
# The dry run sets GPU_CHECK_FAKE=1, which makes gpu-check.sh judge the
# fp32 self-test as it always judges tf32 and bf16: by its calls (every
# call succeeded and its JSON has no error), its note counting the failed
# comparisons. Everything else runs as on a GPU.
#
# Three runs of gpu-check.sh, each checked:
#   1. all-success: exits 0 and its summary says ok; every step passed (the
#      PyTorch ones n/a: python3 has no PyTorch with CUDA here); the fake
#      recorded no VIOLATION and no failure; the fp32 self-test ran with
#      CUDA_LAUNCH_BLOCKING=1; at most 8 files under OUT (the two images
#      among them); within its budget (GPU_CHECK_BUDGET, 420 s).
#   2. fail-soft: the fake fails every cuLaunchKernel (FAKE_CUDA_FAIL), and
#      a fake compute-sanitizer is named: exits 1, the summary is written
#      and not ok, the fp32 self-test failed, memcheck ran right after it,
#      every later step was skipped; the error paths misused nothing (no
#      VIOLATION).
#   3. a hung GPU: the first download never returns (FAKE_CUDA_HANG) under
#      a 60 s budget: the self-test is killed at its clipped budget,
#      timed_out, the rest skipped, exit 1 within the budget.
# The fakes' records and each run's OUT are kept in the work folder it
# names when a check fails (always, with GPU_CHECK_KEEP=1).
set -u -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX") || exit 1
fails=0
fail() {
	echo "gpu-check-dry: FAIL: $*" >&2
	fails=$((fails + 1))
}
T0=$SECONDS

# ---- the fakes, the binary, the fake tools ----
mkdir -p "$W/lib" "$W/bin" "$W/tmp"
for l in cuda:libcuda.so.1 nvrtc:libnvrtc.so.13 cublaslt:libcublasLt.so.13 cublas:libcublas.so.13; do
	if ! gcc -shared -fPIC -O1 -Wall -Wextra -Werror -o "$W/lib/${l#*:}" "cuda/testdata/fake${l%%:*}.c" -ldl -lpthread; then
		echo "gpu-check-dry: gcc failed on cuda/testdata/fake${l%%:*}.c" >&2
		exit 1
	fi
done
# bin/tinct, built when missing, older than a Go file or not a
# CGO_ENABLED=0 build (TINCT_BIN: another, used as it is)
BIN=${TINCT_BIN:-$root/bin/tinct}
if [ -z "${TINCT_BIN:-}" ] && { [ ! -x bin/tinct ] || [ -n "$(find . -name '*.go' -newer bin/tinct -print -quit)" ] ||
	[ go.mod -nt bin/tinct ] || ! go version -m bin/tinct 2>/dev/null | grep -q 'CGO_ENABLED=0'; }; then
	echo "gpu-check-dry: building bin/tinct (CGO_ENABLED=0)"
	CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct || exit 1
fi
cat >"$W/bin/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
# a fake nvidia-smi (scripts/gpu-check-dry.sh)
case " $* " in
*" -lms "* | *" -l "*) while :; do echo 1234; sleep 0.1; done ;;
*--query-gpu*) echo "name, driver_version, memory.total [MiB], compute_cap" && echo "Fake H200, 580.00.00, 144384 MiB, 9.0" ;;
*) echo "fake nvidia-smi (scripts/gpu-check-dry.sh): 1 GPU, Fake H200, driver 580.00.00, CUDA 13.0" ;;
esac
EOF
cat >"$W/bin/compute-sanitizer" <<'EOF'
#!/usr/bin/env bash
# a fake compute-sanitizer (scripts/gpu-check-dry.sh): notes its call,
# then runs the program without checking anything
echo "compute-sanitizer $*" >>"${FAKE_SANITIZER_LOG:-/dev/null}"
[ "${1:-}" = --version ] && { echo "fake compute-sanitizer"; exit 0; }
while [ $# -gt 0 ]; do
	case $1 in
	--tool | --print-limit | --error-exitcode) shift 2 ;;
	-*) shift ;;
	*) break ;;
	esac
done
exec "$@"
EOF
chmod +x "$W/bin/nvidia-smi" "$W/bin/compute-sanitizer"

# dry RUN [VAR=value...]: gpu-check.sh with the fakes; sets RC and SECS
dry() {
	local run=$1
	shift
	mkdir -p "$W/$run"
	local t=$SECONDS
	env TINCT_CUDA_LIBS="$W/lib" TINCT_CUDA_LIBS_ONLY=1 FAKE_CUDA_OK=1 FAKE_CUDA_LOG="$W/$run/calls.log" \
		FAKE_CUDA_LOG_LIMIT=20000 PATH="$W/bin:$PATH" GPU_CHECK_FAKE=1 GPU_CHECK_SANITIZER=none \
		OUT="$W/$run/out" TMPDIR="$W/tmp" TINCT_BIN="$BIN" "$@" \
		timeout -k 10 600 bash scripts/gpu-check.sh >"$W/$run/stdout" 2>&1
	RC=$?
	SECS=$((SECONDS - t))
	echo "gpu-check-dry: run $run: exit $RC in ${SECS}s"
	local n
	n=$(find "$W/$run/out" -type f | wc -l)
	[ "$n" -le 8 ] || fail "$run: $n files under OUT (at most 8): $(cd "$W/$run/out" && find . -type f | tr '\n' ' ')"
	[ -z "$(find "$W/$run/out" -mindepth 1 -type d)" ] || fail "$run: folders under OUT"
	[ "$RC" = 0 ] || [ "$RC" = 1 ] || fail "$run: exit $RC (0 or 1 expected; 124/137: gpu-check.sh hung)"
	if grep -q '^VIOLATION' "$W/$run/calls.log" 2>/dev/null; then
		fail "$run: the fake libraries saw misuse:"
		grep '^VIOLATION' "$W/$run/calls.log" | sort | uniq -c | sort -rn | head -n 20 >&2
	fi
}

# summary RUN PYTHON-CHECKS: the summary parses, ok matches the exit
# status, and the checks (Python over s, the summary, and steps, by name)
# hold; each failed assertion is printed
summary() {
	local run=$1 checks=$2
	if ! "$PY" - "$W/$run/out/summary.json" "$RC" "$checks" <<'EOF'; then
import json, sys
path, rc, checks = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    s = json.load(open(path))
except Exception as e:
    print(f"summary.json: {e}")
    sys.exit(1)
steps = {x["name"]: x for x in s["steps"]}
order = [x["name"] for x in s["steps"]]
bad = []
if s["ok"] != (rc == 0):
    bad.append(f'"ok": {s["ok"]} but exit {rc}')
for c in checks.strip().split("\n"):
    c = c.strip()
    try:
        if c and not eval(c):
            bad.append(c)
    except Exception as e:
        bad.append(f"{c}: {e!r}")
for b in bad:
    print("check failed:", b)
if bad:
    for x in s["steps"]:
        print(f'  {x["name"]:20} {x["status"]:9} exit {x["exit_code"]} {x["seconds"]}s  {x["note"]}')
sys.exit(1 if bad else 0)
EOF
		fail "$run: summary checks (stdout: $W/$run/stdout)"
	fi
}

GPU_STEPS="['probe', 'selftest-fp32', 'train', 'colorize', 'bench-train-b32', 'bench-train-b128', 'bench-forward', 'bench-colorize', 'selftest-tf32', 'selftest-bf16']"

# ---- 1. all-success ----
dry ok
summary ok "
rc == 0
all(steps[n]['status'] == 'passed' for n in ['nvidia-smi', 'version', 'find'] + $GPU_STEPS)
all(x['status'] in ('passed', 'n/a') for x in s['steps'])
all(steps[n]['status'] in ('n/a', 'passed') for n in ['pytorch-train-b32', 'pytorch-forward', 'pytorch-colorize'])
not any(n.startswith('memcheck') for n in order)
all('every call succeeded' in steps[n]['note'] for n in ['selftest-fp32', 'selftest-tf32', 'selftest-bf16'])
all(steps[n].get('peak_device_mib') == 1234 for n in ['bench-train-b32', 'bench-forward'])
all(x['timed_out'] is False for x in s['steps'])
s['fake_libraries'] is True and s['stopped'] is None
s['seconds'] <= s['budget_s']
"
for f in gpu-check.log summary.json colorized.png train-samples.png selftest-fp32.json; do
	[ -s "$W/ok/out/$f" ] || fail "ok: no $f under OUT"
done
grep -q '^cuInit flags=0 CUDA_LAUNCH_BLOCKING=1 rc=0' "$W/ok/calls.log" || fail "ok: no process ran with CUDA_LAUNCH_BLOCKING=1"
grep -q '^FAILED' "$W/ok/calls.log" && fail "ok: a call failed: $(grep -m1 '^FAILED' "$W/ok/calls.log")"
n=$(grep -c '^cuDevicePrimaryCtxRetain' "$W/ok/calls.log")
[ "$n" -ge 9 ] || fail "ok: $n device contexts opened; each of the 9 GPU steps past probe opens one"
echo "gpu-check-dry: run ok: $(grep -c '^cuLaunchKernel' "$W/ok/calls.log") launches and $(grep -c '^cublas.*Gemm' "$W/ok/calls.log") products recorded, all well-formed ($(grep -c '^LIMIT' "$W/ok/calls.log") records cut at FAKE_CUDA_LOG_LIMIT; violations are always recorded); peak fake device memory $(grep -o 'peak=[0-9]*' "$W/ok/calls.log" | cut -d= -f2 | sort -n | tail -n 1) bytes"

# ---- 2. fail-soft: every launch fails ----
dry fail FAKE_CUDA_FAIL=cuLaunchKernel GPU_CHECK_SANITIZER="$W/bin/compute-sanitizer" FAKE_SANITIZER_LOG="$W/fail/sanitizer.log"
summary fail "
rc == 1
steps['probe']['status'] == 'passed'
steps['selftest-fp32']['status'] == 'failed'
order[order.index('selftest-fp32') + 1] == 'memcheck-selftest-fp32'
steps['memcheck-selftest-fp32']['status'] in ('passed', 'failed')
'compute-sanitizer' in steps['memcheck-selftest-fp32']['command']
s['stopped'] == 'selftest-fp32 did not pass'
all(steps[n]['status'] == 'skipped' and steps[n]['exit_code'] is None for n in ${GPU_STEPS}[2:])
all(steps[n]['status'] == 'skipped' for n in ['pytorch-train-b32', 'pytorch-forward', 'pytorch-colorize'])
"
grep -q '^FAILED cuLaunchKernel: injected' "$W/fail/calls.log" || fail "fail: no injected failure recorded"
grep -q -- '--tool memcheck' "$W/fail/sanitizer.log" 2>/dev/null || fail "fail: compute-sanitizer was not run"
[ "$SECS" -le 120 ] || fail "fail: ${SECS}s to stop after the self-test"

# ---- 3. a hung GPU under a short budget ----
dry hang FAKE_CUDA_HANG=cuMemcpyDtoHAsync_v2 GPU_CHECK_BUDGET=60
summary hang "
rc == 1
steps['selftest-fp32']['status'] == 'timed_out' and steps['selftest-fp32']['timed_out'] is True
steps['selftest-fp32']['budget_s'] < 60
all(steps[n]['status'] == 'skipped' for n in ${GPU_STEPS}[2:])
s['seconds'] <= 60
"
grep -q '^FAILED cuMemcpyDtoHAsync_v2: hangs' "$W/hang/calls.log" || fail "hang: the fake did not hang"
[ "$SECS" -le 70 ] || fail "hang: ${SECS}s under a 60 s budget"

echo "gpu-check-dry: $((SECONDS - T0))s in all"
if [ "$fails" -gt 0 ]; then
	echo "gpu-check-dry: $fails check(s) failed; records, outputs and logs in $W" >&2
	exit 1
fi
if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then
	echo "gpu-check-dry: kept $W"
else
	rm -rf "$W"
fi
echo "gpu-check-dry: ok"
