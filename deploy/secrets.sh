#!/usr/bin/env bash
# secrets.sh [DIR] — makes the files deploy/compose.yaml mounts as secrets
# (default DIR: deploy/.secrets, which git ignores): a random cluster
# secret, random S3 access and secret keys (MinIO's root user in the
# stack), and the cluster's TLS CA with one certificate all nodes share
# (tinct cluster certs; nodes check certificates against the CA, not host
# names). Existing files are kept, so it is safe to run again.
#
# The containers run as uid 10001: run this as root (the files are then
# chowned to 10001, mode 0400), or chown them yourself.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/deploy/.secrets}
TINCT=${TINCT:-$ROOT/bin/tinct}
[[ -x $TINCT ]] || (cd "$ROOT" && go build -o bin/tinct ./cmd/tinct)

mkdir -p "$DIR"
umask 077
rand() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }
for f in cluster-secret s3-access-key s3-secret-key serve-token; do
	[[ -s $DIR/$f ]] || rand >"$DIR/$f"
done
if [[ ! -s $DIR/tls/tls.crt ]]; then
	"$TINCT" cluster certs --out "$DIR/ca" --host tinct --in-work-tree >/dev/null
	rm -rf "$DIR/tls"
	mv "$DIR/ca/tinct" "$DIR/tls"
fi
if [[ $(id -u) == 0 ]]; then
	chown -R 10001:10001 "$DIR"
	find "$DIR" -type f -exec chmod 0400 {} +
else
	echo "secrets: not root: make $DIR readable by uid 10001 (the containers' user) yourself" >&2
fi
echo "secrets: $DIR (CA key in $DIR/ca/ca.key: keep it off the nodes)"
