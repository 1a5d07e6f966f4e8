# A Docker engine and Lockgate's images, for the container tests (fine-tunes on a Docker
# work pool, killed from outside). Idempotent: an engine that answers is kept; images are
# built only when their tag (the lock files' hash) is missing.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  echo "ci: installing docker.io and debootstrap (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  # No init system here: the daemon is started by hand and logs beside the other CI logs.
  mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/lockgate"
  nohup dockerd >"${XDG_CACHE_HOME:-$HOME/.cache}/lockgate/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "ci: dockerd did not start; see ~/.cache/lockgate/dockerd.log" >&2; exit 1; }
fi
ci_background images make images
