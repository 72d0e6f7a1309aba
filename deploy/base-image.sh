#!/usr/bin/env bash
# base-image.sh NAME:TAG — builds a Debian bookworm base image from Debian's
# packages (debootstrap, then docker import), for machines whose Docker
# engine cannot pull images. It holds what tinct loads at run time: oneDNN
# (libdnnl2, tinct's fastest CPU backend) and CA certificates.
#
# Elsewhere the Dockerfile's default base (the public Debian slim image)
# works unchanged; this is only the way to get one without a registry.
# The mirror is the one this machine's apt uses. Needs root and debootstrap
# (apt-get install debootstrap). Takes 2–4 minutes.
set -euo pipefail
TAG=${1:?usage: base-image.sh NAME:TAG}
PACKAGES=${BASE_PACKAGES:-libdnnl2 ca-certificates}

if ! command -v debootstrap >/dev/null; then
	[[ $(id -u) == 0 ]] || { echo "base-image: needs debootstrap (apt-get install debootstrap) and root" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# the mirror this machine's apt uses (deb822 or one-line sources)
MIRROR=$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'; grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}') | grep -v security | head -n 1 || true)

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/tinct-base.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
echo "base-image: debootstrap bookworm into $ROOT${MIRROR:+ from $MIRROR}"
debootstrap --variant=minbase bookworm "$ROOT" ${MIRROR:+"$MIRROR"} >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
# install without recommends, then drop what an image does not need
chroot "$ROOT" apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* "$ROOT"/var/log/*
tar --numeric-owner -C "$ROOT" -c . | docker import - "$TAG" >/dev/null
echo "base-image: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
