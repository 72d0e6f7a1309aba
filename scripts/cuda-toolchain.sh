#!/usr/bin/env bash
# cuda-toolchain.sh [DIR] fetches NVIDIA's run-time compiler (libnvrtc12,
# with its builtins library) and ptxas from Debian's non-free section into
# DIR (default ${TINCT_CUDA_CACHE:-$HOME/.cache/tinct-cuda}), so that CI can
# compile the kernels with the real compilers on a machine without a GPU
# (cuda/nvrtc_test.go, make cuda-compilers). It writes DIR/env:
#
#   TINCT_NVRTC=DIR/root/usr/lib/x86_64-linux-gnu/libnvrtc.so.12
#   TINCT_PTXAS=DIR/root/usr/bin/ptxas
#
# Nothing is installed and the machine's apt setup is left alone: a private
# apt configuration under DIR/apt (its own sources.list, lists and cache)
# names the Debian mirror this machine's own sources already use, read from
# /etc/apt at run time, with the suite that carries CUDA 12.4 and the
# contrib, non-free and non-free-firmware components; `apt-get download`
# fetches the .debs and `dpkg-deb` unpacks them. Root is not needed.
# Idempotent: a DIR whose env names files that still run is reused as it is.
#
# Why trixie: bookworm's non-free has CUDA 11.8 (libnvrtc11.2), and
# bookworm-backports carries no CUDA; trixie's non-free has NVRTC 12.4.127
# and ptxas 12.4.131 (checked December 2025). Both run on bookworm's glibc.
# ptxas is only in nvidia-cuda-toolkit (87 MB, most of it nvcc, cicc,
# nvdisasm, nvlink): only usr/bin/ptxas is taken from it, which needs nothing
# but libc, libm and libpthread. About 105 MB are downloaded, once.
set -euo pipefail

DIR=${1:-${TINCT_CUDA_CACHE:-${HOME:-/tmp}/.cache/tinct-cuda}}
SUITE=${TINCT_CUDA_SUITE:-trixie}
ARCH=$(dpkg --print-architecture)
case "$ARCH" in
amd64) TRIPLET=x86_64-linux-gnu ;;
arm64) TRIPLET=aarch64-linux-gnu ;;
*) echo "cuda-toolchain: no CUDA packages for $ARCH in Debian" >&2; exit 1 ;;
esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
NVRTC=$DIR/root/usr/lib/$TRIPLET/libnvrtc.so.12
PTXAS=$DIR/root/usr/bin/ptxas

# works says whether the unpacked tree is usable: both files there, ptxas
# runs (so no shared library is missing), and the builtins NVRTC dlopens by
# name sit beside it (cuda.preloadBuiltins loads them from there).
works() {
	[[ -f "$NVRTC" && -x "$PTXAS" ]] || return 1
	compgen -G "$DIR/root/usr/lib/$TRIPLET/libnvrtc-builtins.so.12*" >/dev/null || return 1
	"$PTXAS" --version >/dev/null 2>&1
}

if [[ -f "$DIR/env" ]] && works; then
	echo "cuda-toolchain: reusing $DIR ($(grep -h '^# ' "$DIR/env" | sed 's/^# //' | paste -sd' '))"
	cat "$DIR/env"
	exit 0
fi

# The mirror: the first URI of an enabled Debian source on this machine,
# one-line (sources.list, *.list) or deb822 (*.sources) format, that is not
# the security archive. Its keyring comes along where the source names one.
mirror=""
keyring=""
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[[ -f "$f" ]] || continue
	while read -r typ rest; do
		[[ "$typ" == deb ]] || continue
		opts=""
		if [[ "$rest" == \[* ]]; then
			opts=${rest%%]*}
			rest=${rest#*] }
		fi
		read -r uri suite _ <<<"$rest"
		[[ "$uri" == */debian || "$uri" == */debian/ ]] || continue
		[[ "$suite" == *-security ]] && continue
		mirror=${uri%/}
		if [[ "$opts" == *signed-by=* ]]; then
			keyring=${opts#*signed-by=}
			keyring=${keyring%% *}
		fi
		break 2
	done <"$f"
done
if [[ -z "$mirror" ]]; then
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f "$f" ]] || continue
		# one "URI<TAB>keyring" line per enabled stanza of type deb
		line=$(awk -v RS= -F'\n' '{
			uris = ""; key = ""; deb = 0; on = 1; sec = 0
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^[ \t]*#/) continue
				split($i, kv, ":[ \t]*"); k = tolower(kv[1]); v = substr($i, length(kv[1]) + 2); sub(/^[ \t]+/, "", v)
				if (k == "types" && v ~ /(^| )deb( |$)/) deb = 1
				if (k == "uris") uris = v
				if (k == "signed-by") key = v
				if (k == "enabled" && v ~ /^(no|false)/) on = 0
				if (k == "suites" && v ~ /-security/) sec = 1
			}
			split(uris, u, " ")
			if (deb && on && !sec && u[1] ~ /\/debian\/?$/) print u[1] "\t" key
		}' "$f" | head -n1)
		if [[ -n "$line" ]]; then
			mirror=${line%%$'\t'*}
			mirror=${mirror%/}
			keyring=${line#*$'\t'}
			break
		fi
	done
fi
if [[ -z "$mirror" ]]; then
	echo "cuda-toolchain: no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/ (looked for a deb source whose URI ends in /debian)" >&2
	exit 1
fi
# A deb822 Signed-By may hold the key itself rather than a file: then, and
# when none is named, use the archive keyring that debian-archive-keyring
# installs (bookworm's holds trixie's keys).
if [[ -z "$keyring" || ! -f "$keyring" ]]; then
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi

APT=$DIR/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
echo "deb [signed-by=$keyring] $mirror $SUITE contrib non-free non-free-firmware" >"$APT/sources.list"
# Only the Packages indices: no translations, no AppStream metadata (which
# the host's apt.conf.d may ask for). The host's apt.conf.d stays in force
# otherwise (a proxy configured there still applies).
aptopts=(
	-o "Dir::Etc::SourceList=$APT/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State=$APT"
	-o "Dir::State::Lists=$APT/lists"
	-o "Dir::Cache=$APT/cache"
	-o "Acquire::Languages=none"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
)
# As root apt downloads as the _apt user, which may not reach DIR (under
# /root by default): download as root instead of failing on permissions.
if [[ $(id -u) == 0 ]]; then
	aptopts+=(-o "APT::Sandbox::User=root")
fi

start=$(date +%s.%N)
echo "cuda-toolchain: $SUITE contrib non-free non-free-firmware from $mirror into $DIR"
apt-get "${aptopts[@]}" -qq update

# version PKG prints the candidate version of PKG in the private lists.
version() {
	apt-cache "${aptopts[@]}" show "$1" 2>/dev/null | awk '/^Version:/ {print $2; exit}'
}
nvrtc_ver=$(version libnvrtc12)
if [[ -z "$nvrtc_ver" ]]; then
	echo "cuda-toolchain: $SUITE's non-free section has no libnvrtc12 (set TINCT_CUDA_SUITE to a suite that does)" >&2
	exit 1
fi
# NVRTC depends on the builtins of its own version; their package name
# carries the minor version (libnvrtc-builtins12.4): take it from Depends.
builtins=$(apt-cache "${aptopts[@]}" show "libnvrtc12=$nvrtc_ver" | awk -F': ' '/^Depends:/ {print $2; exit}' |
	tr ',' '\n' | grep -o 'libnvrtc-builtins[0-9.]*' | head -n1)
toolkit_ver=$(version nvidia-cuda-toolkit)
if [[ -z "$builtins" || -z "$toolkit_ver" ]]; then
	echo "cuda-toolchain: $SUITE has libnvrtc12 $nvrtc_ver but no libnvrtc-builtins dependency or no nvidia-cuda-toolkit" >&2
	exit 1
fi
builtins_ver=$(version "$builtins")

tmp=$(mktemp -d "$DIR/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/root"
(cd "$tmp/debs" && apt-get "${aptopts[@]}" -qq download \
	"libnvrtc12=$nvrtc_ver" "$builtins=$builtins_ver" "nvidia-cuda-toolkit=$toolkit_ver")
fetched=$(du -cb "$tmp"/debs/*.deb | awk 'END {print $1}')
dl_done=$(date +%s.%N)

for d in "$tmp"/debs/libnvrtc*.deb; do
	dpkg-deb -x "$d" "$tmp/root"
done
# Only ptxas from the toolkit: the rest (nvcc, cicc, nvdisasm, nvlink, the
# sanitizer) is 170 MB unpacked that nothing here uses.
dpkg-deb --fsys-tarfile "$tmp"/debs/nvidia-cuda-toolkit_*.deb | tar -x -C "$tmp/root" ./usr/bin/ptxas

rm -rf "$DIR/root"
mv "$tmp/root" "$DIR/root"
if ! works; then
	echo "cuda-toolchain: unpacked into $DIR/root, but it does not work:" >&2
	ls -l "$NVRTC" "$PTXAS" >&2 || true
	"$PTXAS" --version >&2 || true
	ldd "$PTXAS" "$NVRTC" >&2 || true
	exit 1
fi
for f in "$NVRTC" "$PTXAS"; do
	if ldd "$f" | grep -q 'not found'; then
		echo "cuda-toolchain: $f misses libraries:" >&2
		ldd "$f" >&2
		exit 1
	fi
done
end=$(date +%s.%N)

{
	echo "# libnvrtc12 $nvrtc_ver, $builtins $builtins_ver, ptxas from nvidia-cuda-toolkit $toolkit_ver ($SUITE)"
	echo "TINCT_NVRTC=$NVRTC"
	echo "TINCT_PTXAS=$PTXAS"
} >"$DIR/env.tmp"
mv "$DIR/env.tmp" "$DIR/env"
awk -v b="$fetched" -v s="$start" -v d="$dl_done" -v e="$end" 'BEGIN {
	printf "cuda-toolchain: fetched %.1f MB (update and download %.1f s), unpacked in %.1f s\n", b / 1e6, d - s, e - d
}'
echo "cuda-toolchain: $(du -sh "$DIR/root" | cut -f1) in $DIR/root; $("$PTXAS" --version | tail -n1)"
cat "$DIR/env"
