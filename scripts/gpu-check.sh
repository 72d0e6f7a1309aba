#!/usr/bin/env bash
# gpu-check: the CUDA backend's check on a machine with an NVIDIA GPU
# (issues 13 and 20, docs/gpu.md), sized for a lent GPU's budget.
#
# NOT RUN ON A GPU YET. This script was written in sessions without a GPU:
# nothing in it has run on one. The kernels' arithmetic and the network on
# the device have only been checked on the CPU, through the g++ shim, and
# every --gpu command has only run against fake libraries that compute
# nothing (scripts/gpu-check-dry.sh, cuda/testdata/fake*.c); the real
# driver, NVRTC and cuBLAS have never been called. Expect the first run to
# find mistakes; that is what it is for.
#
# How to run it. It builds nothing; build bin/tinct where Go is:
#
#   CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct
#
# (stripped: the tree and the binary must stay under the device machine's
# 64 MiB transfer limit), then on this project's device machine:
#
#   run(command="bash scripts/gpu-check.sh", carry=["bin/tinct"], timeout_s=480)
#
# Elsewhere: OUT=dir bash scripts/gpu-check.sh (OUT defaults to
# outputs/gpu-check, which git ignores; TINCT_BIN names another binary).
# tinct finds the driver and NVIDIA's libraries itself (on the device
# machine: the driver under /usr/local/nvidia, cuBLAS and NVRTC in
# python3's NVIDIA wheels); TINCT_CUDA_LIBS (colon-separated directories)
# overrides.
#
# Budget. The whole script takes at most GPU_CHECK_BUDGET seconds (420, so
# 7 minutes; 60 s to spare under timeout_s=480). Each step has its own
# budget, enforced with `timeout -k 10` (tinct train catches SIGTERM to save
# a checkpoint, hence the KILL 10 s later), and gets no more than what is
# left of the whole; a step that no longer fits is skipped. It fails soft:
# a failed or timed-out step is recorded and the script goes on (but see
# the fp32 self-test), and the summary and the log are always written.
#
# What comes back: at most 8 files under $OUT:
#   gpu-check.log        everything every step printed, with headers
#   summary.json         per step: name, status (passed, failed, timed_out,
#                        skipped, n/a), exit code, seconds, timed_out,
#                        budget, note, last line of output (and peak device
#                        memory for the benchmarks); then "ok"
#   selftest-fp32.json, selftest-tf32.json, selftest-bf16.json
#   colorized.png        tinct colorize --gpu 0 with the trained checkpoint
#   train-samples.png    the short training run's last sample grid
# Checkpoints, run folders and scratch go to ${TMPDIR:-/tmp}/gpu-check.$$.*,
# removed at the end (GPU_CHECK_KEEP=1 keeps it).
#
# Steps (budget in seconds):
#   machine       nvidia-smi (20), tinct version (20), tinct cuda find (40):
#                 the driver, library paths and versions, logged first; then,
#                 logged only, the loader's libraries, python3's NVIDIA
#                 wheels and PyTorch, compute-sanitizer's version
#   probe         tinct cuda probe --gpu 0 (30); if it fails (no GPU, no
#                 driver), every later step is skipped
#   selftest-fp32 tinct cuda selftest --gpu 0 --precision fp32 (120), with
#                 CUDA_LAUNCH_BLOCKING=1 so that a failing launch is named:
#                 NVRTC compiles the kernels; nn/opcheck's op-by-op check
#                 (every operation of the CUDA backend, the convolutions over
#                 cuBLAS among them, against the Go kernels: the check every
#                 backend passes in go test), then a small network (forward,
#                 training steps, Adam, the EMA) on the device against the
#                 Go kernels. If it fails, memcheck runs (below) and every
#                 later step is skipped.
#   train         tinct train device=cuda:0, configs/sample.yaml (the bundled
#                 photos at 64²), 3 epochs, a checkpoint and samples (150)
#   colorize      tinct colorize --gpu 0 --checkpoint (that checkpoint),
#                 20 steps, 2 samples (60)
#   bench-*       tinct bench train --gpu 0 at 128², batch 32 (60) and 128
#                 (75); bench forward (45); bench colorize, 20 steps (60);
#                 each with the GPU's peak memory, sampled by nvidia-smi
#   pytorch-*     the same shapes in PyTorch eager on the same card
#                 (testdata/reference/bench.py --device cuda; 45 each; n/a
#                 where python3 has no PyTorch with CUDA)
#   selftest-tf32 (60, with --bench: a 3x3 convolution timed in each
#   selftest-bf16 precision) and (45): what those products change. The op
#                 check judges them by the precision's product tolerances
#                 (opcheck.TF32, BF16), the network check by fp32's, which
#                 they exceed by design: so they pass when every call
#                 succeeded (the JSON has no error), their notes counting the
#                 failed comparisons
#   memcheck-*    right after the first failing GPU step, not last: that
#                 step again (a shorter version of it) under
#                 compute-sanitizer --tool memcheck (90), where the tool is
#                 (GPU_CHECK_SANITIZER: its path, or none; else PATH,
#                 /usr/local/cuda/bin); n/a otherwise
#
# Exit status: 0 when every step passed (or was n/a), 1 otherwise.
#
# GPU_CHECK_FAKE=1 is the dry run's (scripts/gpu-check-dry.sh): the
# libraries are fakes that check every call but compute nothing, so the fp32
# self-test's comparisons cannot pass; it is then judged as tf32 and bf16
# are, by its calls alone (every call succeeded, the JSON has no error: a
# result's "error" is a failure to run, "mismatch" and the numbers are
# comparisons), and its note says how many comparisons failed. Nothing else
# changes.
set -u -o pipefail

here=$PWD
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$here/$1" ;; esac; }
OUT=$(abs "${OUT:-outputs/gpu-check}")
BIN=$(abs "${TINCT_BIN:-$root/bin/tinct}")
BUDGET=${GPU_CHECK_BUDGET:-420}
FAKE=${GPU_CHECK_FAKE:-0}
cd "$root" || exit 1
mkdir -p "$OUT" || exit 1
SCR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.$$.XXXX") || exit 1
LOG=$OUT/gpu-check.log
SUMMARY=$OUT/summary.json
: >"$LOG"

now_us() { # microseconds since the epoch
	if [ -n "${EPOCHREALTIME:-}" ]; then
		local t=${EPOCHREALTIME/[.,]/}
		printf '%s\n' "$t"
	else
		printf '%s000000\n' "$(date +%s)"
	fi
}
T0=$(now_us)
elapsed() { echo $((($(now_us) - T0) / 1000000)); }
secs() { # secs FROM_US: seconds since FROM_US, one decimal
	local d=$((($(now_us) - $1) / 100000))
	printf '%d.%d\n' $((d / 10)) $((d % 10))
}

say() { printf '\n== %s\n' "$*" | tee -a "$LOG"; }
note() { printf '%s\n' "$*" | tee -a "$LOG"; }

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/ }
	s=${s//$'\r'/}
	s=${s//$'\n'/\\n}
	printf '"%s"' "$s"
}

# Steps done so far, one entry per field.
S_NAME=() S_STATUS=() S_RC=() S_SECS=() S_TIMED=() S_BUDGET=() S_NOTE=() S_LAST=() S_PEAK=() S_CMD=()
STOPPED=""
MEMCHECKED=0

write_summary() {
	local ok=true i tmp=$SCR/summary.json
	{
		printf '{\n  "script": "scripts/gpu-check.sh",\n  "fake_libraries": %s,\n' "$([ "$FAKE" = 1 ] && echo true || echo false)"
		printf '  "budget_s": %s,\n  "seconds": %s,\n  "stopped": %s,\n  "steps": [' "$BUDGET" "$(secs "$T0")" \
			"$([ -n "$STOPPED" ] && json_str "$STOPPED" || echo null)"
		for i in "${!S_NAME[@]}"; do
			[ "$i" -gt 0 ] && printf ','
			printf '\n    {"name": %s, "status": %s, "exit_code": %s, "seconds": %s, "timed_out": %s, "budget_s": %s' \
				"$(json_str "${S_NAME[$i]}")" "$(json_str "${S_STATUS[$i]}")" "${S_RC[$i]}" "${S_SECS[$i]}" "${S_TIMED[$i]}" "${S_BUDGET[$i]}"
			[ -n "${S_PEAK[$i]}" ] && printf ', "peak_device_mib": %s' "${S_PEAK[$i]}"
			printf ', "note": %s, "last_line": %s, "command": %s}' "$(json_str "${S_NOTE[$i]}")" "$(json_str "${S_LAST[$i]}")" "$(json_str "${S_CMD[$i]}")"
			case ${S_STATUS[$i]} in passed | n/a) ;; *) ok=false ;; esac
		done
		[ "${#S_NAME[@]}" -eq 0 ] && ok=false
		printf '\n  ],\n  "ok": %s\n}\n' "$ok"
	} >"$tmp" && cp "$tmp" "$SUMMARY"
	[ "$ok" = true ]
}

record() { # record NAME STATUS RC SECS TIMED BUDGET NOTE LAST PEAK CMD
	S_NAME+=("$1") S_STATUS+=("$2") S_RC+=("$3") S_SECS+=("$4") S_TIMED+=("$5") S_BUDGET+=("$6")
	S_NOTE+=("$7") S_LAST+=("$8") S_PEAK+=("$9") S_CMD+=("${10}")
	write_summary
}

status_of() { # status_of NAME: the recorded status of step NAME
	local i
	for i in "${!S_NAME[@]}"; do
		[ "${S_NAME[$i]}" = "$1" ] && { echo "${S_STATUS[$i]}"; return; }
	done
	echo none
}

SAMPLER=""
sampler_start() {
	: >"$SCR/mem"
	command -v nvidia-smi >/dev/null 2>&1 || return 0
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$SCR/mem" 2>/dev/null &
	SAMPLER=$!
}
sampler_stop() { # prints the peak MiB, or nothing
	if [ -n "$SAMPLER" ]; then
		kill "$SAMPLER" 2>/dev/null
		wait "$SAMPLER" 2>/dev/null
		SAMPLER=""
	fi
	grep -E '^[[:space:]]*[0-9]+[[:space:]]*$' "$SCR/mem" 2>/dev/null | sort -n | tail -n 1 | tr -d '[:space:]'
}

finish() {
	local rc
	sampler_stop >/dev/null
	write_summary
	rc=$?
	say "summary ($SUMMARY)"
	{
		local i
		for i in "${!S_NAME[@]}"; do
			printf '  %-20s %-9s exit %-4s %6ss  %s\n' "${S_NAME[$i]}" "${S_STATUS[$i]}" "${S_RC[$i]}" "${S_SECS[$i]}" "${S_NOTE[$i]}"
		done
		[ -n "$STOPPED" ] && printf '  stopped: %s\n' "$STOPPED"
		printf '  ok: %s (%ss of %ss)\n' "$([ "$rc" = 0 ] && echo true || echo false)" "$(secs "$T0")" "$BUDGET"
	} | tee -a "$LOG"
	[ "${GPU_CHECK_KEEP:-0}" = 1 ] || rm -rf "$SCR"
	exit "$rc"
}
trap finish EXIT
trap 'STOPPED="a signal"; exit 1' INT TERM HUP

# Per-step settings, read and cleared by step:
ENVS=() # VAR=value for the command (and its memcheck)
MC=()   # the command memcheck runs if this step fails (empty: none)

# step NAME BUDGET [judge=calls|fp32] [json=PATH] [needs=STEP] [mem] [stop] -- CMD...
step() {
	local name=$1 budget=$2 judge=rc json="" needs="" mem=0 stop=0
	shift 2
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		case $1 in
		judge=*) judge=${1#judge=} ;;
		json=*) json=${1#json=} ;;
		needs=*) needs=${1#needs=} ;;
		mem) mem=1 ;;
		stop) stop=1 ;;
		*) echo "gpu-check: step $name: unknown option $1" >&2 ;;
		esac
		shift
	done
	shift
	local envs=(${ENVS[@]+"${ENVS[@]}"}) mc=(${MC[@]+"${MC[@]}"})
	ENVS=() MC=()
	local shown="${envs[*]+${envs[*]} }$*"
	if [ -n "$STOPPED" ]; then
		record "$name" skipped null 0 false "$budget" "stopped: $STOPPED" "" "" "$shown"
		return 1
	fi
	if [ -n "$needs" ] && [ "$(status_of "$needs")" != passed ]; then
		record "$name" skipped null 0 false "$budget" "needs step $needs, which did not pass" "" "" "$shown"
		return 1
	fi
	local left=$((BUDGET - $(elapsed) - 15 - 10)) t=$budget
	[ "$left" -lt "$t" ] && t=$left
	if [ "$t" -lt 20 ] && [ "$t" -lt "$budget" ]; then
		record "$name" skipped null 0 false "$budget" "out of time: $((BUDGET - $(elapsed)))s of the ${BUDGET}s left" "" "" "$shown"
		return 1
	fi
	say "$name (budget ${t}s): $shown"
	[ "$mem" = 1 ] && sampler_start
	local t1 rc
	t1=$(now_us)
	timeout -k 10 "$t" env ${envs[@]+"${envs[@]}"} "$@" 2>&1 | tee -a "$LOG" >"$SCR/step.out"
	rc=${PIPESTATUS[0]}
	tail -n 4 "$SCR/step.out" | cut -c1-300 # the whole output is in the log
	local took peak="" timed=false status note="" last
	took=$(secs "$t1")
	[ "$mem" = 1 ] && peak=$(sampler_stop)
	last=$(tr -d '\000-\010\013-\037' <"$SCR/step.out" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-240)
	case $rc in
	0) status=passed ;;
	124 | 137) status=timed_out timed=true note="killed after ${t}s" ;;
	*) status=failed ;;
	esac
	case $name:$rc in memcheck-*:99) note="memcheck found errors (in the log)" ;; esac
	if [ "$status" = failed ] && { [ "$judge" = calls ] || { [ "$judge" = fp32 ] && [ "$FAKE" = 1 ]; }; }; then
		# judged by its calls: the comparisons may fail, every call must not
		local nf="" nall=0
		if [ -s "$json" ]; then
			nf=$(sed -n 's/^  "failed": \([0-9]*\).*/\1/p' "$json")
			nall=$(grep -c '"case":' "$json")
		fi
		if [ "$rc" = 1 ] && [ "$nall" -gt 0 ] && [ -n "$nf" ] && ! grep -q -e '"error"' -e '"error: ' "$json"; then
			status=passed
			note="every call succeeded; $nf of $nall comparisons failed"
			if [ "$judge" = fp32 ]; then
				note="$note (GPU_CHECK_FAKE=1: the fake libraries compute nothing)"
			else
				note="$note (expected in this precision: the network check's tolerances are fp32's; see the op check's rows)"
			fi
		elif [ "$nall" -gt 0 ]; then
			note="a call failed (see the errors in $(basename "$json"))"
		else
			note="no results in $(basename "$json") (so no word that every call succeeded)"
		fi
	fi
	note "($name: $status, exit $rc, ${took}s${peak:+, peak device memory ${peak} MiB})"
	record "$name" "$status" "$rc" "$took" "$timed" "$t" "$note" "$last" "$peak" "$shown"
	if [ "$status" != passed ] && [ "${#mc[@]}" -gt 0 ] && [ "$MEMCHECKED" = 0 ]; then
		MEMCHECKED=1
		memcheck "$name" "${mc[@]}"
	fi
	if [ "$status" != passed ] && [ "$stop" = 1 ]; then
		STOPPED="$name did not pass"
	fi
	[ "$status" = passed ]
}

SANITIZER=${GPU_CHECK_SANITIZER:-}
[ "$SANITIZER" = none ] && SANITIZER=""
if [ -z "${GPU_CHECK_SANITIZER:-}" ]; then
	for s in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer; do
		if [ -n "$s" ] && [ -x "$s" ]; then
			SANITIZER=$s
			break
		fi
	done
fi

# memcheck FAILED CMD...: CMD under compute-sanitizer's memcheck, right
# after step FAILED failed, with that step's variables (step's local envs,
# which memcheck, called from step, sees).
memcheck() {
	local failed=$1
	shift
	if [ -z "$SANITIZER" ]; then
		record "memcheck-$failed" n/a null 0 false 0 "no compute-sanitizer (PATH, /usr/local/cuda/bin)" "" "" "$*"
		return
	fi
	ENVS=(${envs[@]+"${envs[@]}"})
	step "memcheck-$failed" 90 -- "$SANITIZER" --tool memcheck --print-limit 20 --error-exitcode 99 "$@"
}

# info SECS CMD...: CMD's output in the log, never a step
info() {
	printf '$ %s\n' "${*:2}" >>"$LOG"
	timeout -k 2 "$1" "${@:2}" >>"$LOG" 2>&1 || echo "(exit $?)" >>"$LOG"
}

say "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n): budget ${BUDGET}s, out $OUT, scratch $SCR$([ "$FAKE" = 1 ] && echo ', GPU_CHECK_FAKE=1 (fake libraries)')"
if [ ! -x "$BIN" ]; then
	note "gpu-check: no $BIN; build it where Go is: CGO_ENABLED=0 go build -ldflags='-s -w' -o bin/tinct ./cmd/tinct"
	record bin/tinct failed 127 0 false 0 "no executable $BIN" "" "" "$BIN"
	exit 1
fi

# ---- the machine: driver, libraries, versions ----
step nvidia-smi 20 -- nvidia-smi
step version 20 -- "$BIN" version
step find 40 -- "$BIN" cuda find
say "libraries and tools (logged only)"
info 10 uname -a
info 10 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
info 10 bash -c 'ldconfig -p | grep -E "libcuda\.so|libnvrtc|libcublas|libcudnn\.so" || echo "(none in the loader cache)"'
info 10 bash -c 'ls -ld /usr/local/nvidia/lib* /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null || true'
info 20 python3 -c 'import site, sys, glob
print(sys.executable, sys.version.split()[0])
for s in site.getsitepackages():
    for d in sorted(glob.glob(s + "/nvidia/*/lib")):
        print(d, " ".join(sorted(f for f in __import__("os").listdir(d) if f.startswith(("libnvrtc", "libcublas", "libcudnn.so")))))'
TORCH=0
if timeout -k 2 45 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); assert torch.cuda.is_available()' >>"$LOG" 2>&1; then
	TORCH=1
else
	note "(no PyTorch with CUDA in python3: the pytorch-* steps are n/a)"
fi
[ -n "$SANITIZER" ] && info 20 "$SANITIZER" --version
[ -n "$SANITIZER" ] || note "(no compute-sanitizer: memcheck is n/a)"

# ---- the device ----
step probe 30 stop -- "$BIN" cuda probe --gpu 0

ENVS=(CUDA_LAUNCH_BLOCKING=1)
MC=("$BIN" cuda selftest --gpu 0 --precision fp32 --json "$SCR/memcheck-selftest.json")
step selftest-fp32 120 judge=fp32 json="$OUT/selftest-fp32.json" stop -- \
	"$BIN" cuda selftest --gpu 0 --precision fp32 --json "$OUT/selftest-fp32.json"

# ---- a short training run and a colorization with its checkpoint ----
TR=$SCR/train
MC=("$BIN" train --config configs/sample.yaml device=cuda:0 epochs=1 sample_every=0 checkpoint_every=1
	output_dir="$SCR/memcheck-train" store="$SCR/memcheck-train/checkpoints")
if step train 150 -- "$BIN" train --config configs/sample.yaml device=cuda:0 epochs=3 sample_every=3 checkpoint_every=3 \
	output_dir="$TR" store="$TR/checkpoints"; then
	s=$(find "$TR" -path '*/images/samples-*.png' -size -4M 2>/dev/null | sort | tail -n 1)
	[ -n "$s" ] && cp "$s" "$OUT/train-samples.png"
fi
MC=("$BIN" colorize --gpu 0 --checkpoint "$TR/checkpoints" --steps 5 --samples 1 --out "$SCR/memcheck-colorized" data/sample/fields0.jpg)
if step colorize 60 needs=train -- "$BIN" colorize --gpu 0 --checkpoint "$TR/checkpoints" --steps 20 --samples 2 \
	--out "$SCR/colorized" data/sample/fields0.jpg; then
	s=$(find "$SCR/colorized" -name 'fields0-1.png' -size -4M 2>/dev/null | head -n 1)
	[ -n "$s" ] && cp "$s" "$OUT/colorized.png"
fi

# ---- speed: tinct, then PyTorch eager on the same card (tf32) ----
for b in 32 128; do
	budget=60
	[ "$b" = 128 ] && budget=75
	MC=("$BIN" bench train --gpu 0 --size 128 --batch "$b" --steps 1)
	step "bench-train-b$b" "$budget" mem -- "$BIN" bench train --gpu 0 --size 128 --batch "$b" --steps 5
done
MC=("$BIN" bench forward --gpu 0 --size 128 --calls 1)
step bench-forward 45 mem -- "$BIN" bench forward --gpu 0 --size 128 --calls 20
MC=("$BIN" bench colorize --gpu 0 --size 128 --steps 5 --images 1)
step bench-colorize 60 mem -- "$BIN" bench colorize --gpu 0 --size 128 --steps 20 --images 3

pytorch() { # pytorch NAME ARGS...: testdata/reference/bench.py ARGS on the GPU
	local name=$1
	shift
	local cmd=(python3 testdata/reference/bench.py "$@" --device cuda --precision tf32)
	if [ "$TORCH" = 1 ] || [ -n "$STOPPED" ]; then
		ENVS=(PYTHONUNBUFFERED=1)
		step "$name" 45 mem -- "${cmd[@]}"
	else
		record "$name" n/a null 0 false 45 "no PyTorch with CUDA in python3" "" "" "${cmd[*]}"
	fi
}
pytorch pytorch-train-b32 train --size 128 --batch 32 --steps 5
pytorch pytorch-forward forward --size 128 --calls 20
pytorch pytorch-colorize colorize --size 128 --steps 20 --images 3

# ---- the other precisions: what tf32 and bf16 products change ----
MC=("$BIN" cuda selftest --gpu 0 --precision tf32 --json "$SCR/memcheck-selftest.json")
step selftest-tf32 60 judge=calls json="$OUT/selftest-tf32.json" -- \
	"$BIN" cuda selftest --gpu 0 --precision tf32 --bench --json "$OUT/selftest-tf32.json"
MC=("$BIN" cuda selftest --gpu 0 --precision bf16 --json "$SCR/memcheck-selftest.json")
step selftest-bf16 45 judge=calls json="$OUT/selftest-bf16.json" -- \
	"$BIN" cuda selftest --gpu 0 --precision bf16 --json "$OUT/selftest-bf16.json"

# finish (the EXIT trap) writes the summary and exits 0 or 1
