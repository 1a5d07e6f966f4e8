#!/usr/bin/env bash
# Build Lockgate's container images (`make images`):
#   lockgate-app:<key>      Python 3.11 + the app environment (requirements/app.lock)
#   lockgate-trainer:<key>  the app image + Axolotl's environment (requirements/trainer.lock)
#   lockgate-serving:<key>  vLLM's OpenAI server in its own environment (requirements/serving.lock)
# <key> hashes the lock files and Dockerfiles: an image is rebuilt only when they change.
# All are also tagged :latest (prefect.yaml's Docker pool uses the trainer's by default).
#
# The base is BASE_IMAGE (default debian:bookworm-slim). Where no registry can be reached,
# the same Debian release is built from Debian's packages with debootstrap and imported
# (lockgate-base:bookworm), so the build works offline from an image registry.
#   scripts/images.sh            build what is missing
#   scripts/images.sh --tags     print the three image names for the current lock files
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KEY=$(cat requirements/app.lock requirements/trainer.lock infra/docker/app.Dockerfile infra/docker/trainer.Dockerfile \
  | sha256sum | cut -c1-12)
APP=lockgate-app:$KEY
TRAINER=lockgate-trainer:$KEY
SERVING=lockgate-serving:$(cat requirements/serving.lock infra/docker/serving.Dockerfile | sha256sum | cut -c1-12)
if [ "${1:-}" = "--tags" ]; then echo "$APP $TRAINER $SERVING"; exit 0; fi

if ! docker info >/dev/null 2>&1; then
  echo "images: no Docker engine answers (start dockerd, or see .ci/provision.d/10-docker.sh)" >&2
  exit 2
fi
have() { docker image inspect "$1" >/dev/null 2>&1; }
if have "$APP" && have "$TRAINER" && have "$SERVING"; then
  docker tag "$APP" lockgate-app:latest && docker tag "$TRAINER" lockgate-trainer:latest
  docker tag "$SERVING" lockgate-serving:latest
  echo "images: up to date ($APP, $TRAINER, $SERVING)"
  exit 0
fi

BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
if ! have "$BASE_IMAGE" && ! timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  BASE_IMAGE=lockgate-base:bookworm
  if ! have "$BASE_IMAGE"; then
    # The mirror this machine's apt uses (deb822 "URIs:" or one-line "deb" entries).
    mirror=$(grep -hE '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "images: no registry for the base image; building $BASE_IMAGE from $mirror with debootstrap (about a minute)"
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
      || { echo "images: debootstrap failed; see $rootfs.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
  fi
fi

# The build context: the lock files, the wheels pip should prefer (this machine's CPU torch,
# from PIP_FIND_LINKS) and the CA bundle of a proxied egress (PIP_CERT). The legacy builder
# cannot mount at build time, so they are copied (hard-linked where possible).
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/requirements" "$ctx/wheels"
cp requirements/app.lock requirements/trainer.lock requirements/serving.lock "$ctx/requirements/"
torch=$(grep -E '^torch==' requirements/app.lock)
for dir in ${PIP_FIND_LINKS:-}; do
  [ -d "$dir" ] || continue
  for whl in "$dir"/torch-"${torch#torch==}"[-+]*.whl; do
    [ -e "$whl" ] && { ln "$whl" "$ctx/wheels/" 2>/dev/null || cp "$whl" "$ctx/wheels/"; }
  done
done
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then cp "$PIP_CERT" "$ctx/ca.crt"; else : >"$ctx/ca.crt"; fi

build() {
  local tag=$1 file=$2; shift 2
  echo "images: building $tag (a few minutes, once per lock change)"
  local log="$ctx/build.log"
  if ! docker build --network host -f "$file" -t "$tag" "$@" "$ctx" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "images: building $tag failed (above: the end of the build log)" >&2
    exit 1
  fi
}
cp infra/docker/app.Dockerfile infra/docker/trainer.Dockerfile infra/docker/serving.Dockerfile "$ctx/"
have "$APP" || build "$APP" "$ctx/app.Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH=$torch"
have "$TRAINER" || build "$TRAINER" "$ctx/trainer.Dockerfile" --build-arg "APP_IMAGE=$APP" --build-arg "TORCH=$torch"
have "$SERVING" || build "$SERVING" "$ctx/serving.Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH=$torch"
docker tag "$APP" lockgate-app:latest
docker tag "$TRAINER" lockgate-trainer:latest
docker tag "$SERVING" lockgate-serving:latest
echo "images: ready ($APP, $TRAINER, $SERVING)"
