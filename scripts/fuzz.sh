#!/usr/bin/env bash
# fuzz: run every native Go fuzz target of the module (func FuzzXxx in a
# *_test.go file) for $FUZZTIME each, one after another.
#
#   make fuzz                    (or: scripts/fuzz.sh)
#   FUZZTIME=1m make fuzz        longer runs
#   FUZZFLAGS=-parallel=1 …      extra go test flags (here: one fuzz worker)
#
# Targets are found with go test -list '^Fuzz' in the packages whose tests
# declare one. Every target runs even when an earlier one fails; the script
# exits non-zero if any failed and lists them. A failing input is written
# to the package's testdata/fuzz/FuzzXxx/ (go test then runs it as a seed
# until it is fixed: keep it as a regression seed). Minimizing the new
# inputs the fuzzer finds is capped ($FUZZMINIMIZETIME, default 100x: a
# hundred runs) so that short runs spend their time fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-5s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-100x}
read -r -a extra <<< "${FUZZFLAGS:-}"

mapfile -t pkgs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Z0-9_]' . | xargs -n1 dirname | sort -u)
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets" >&2
	exit 1
fi

# go test -list prints a package's matching names, then "ok  <pkg>  <time>".
targets=()
names=()
while read -r first second _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do targets+=("$second $n"); done
		names=()
		;;
	esac
done < <(go test -list '^Fuzz' "${pkgs[@]}")

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<< "$t"
	echo "=== fuzz $pkg $name ($FUZZTIME)"
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" ${extra[@]+"${extra[@]}"} "$pkg" 2>&1 | tee "$log"; then
		continue
	fi
	# Go's fuzzing coordinator (up to Go 1.26) can report a bare "context
	# deadline exceeded" when a duration -fuzztime expires while a worker
	# is mid-input (go.dev/issue/75804): no input failed, none was saved.
	if grep -qx '    context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
		echo "fuzz: $name: spurious 'context deadline exceeded' as -fuzztime expired (go.dev/issue/75804); no failing input, not a failure"
		continue
	fi
	failed+=("$pkg $name")
done
echo "fuzz: ${#targets[@]} targets in $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: FAILED %s\n' "${failed[@]}" >&2
	exit 1
fi
