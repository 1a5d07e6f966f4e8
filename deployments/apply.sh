#!/usr/bin/env bash
# Apply Lockgate's Prefect environment to the server PREFECT_API_URL points at: work pools
# with their base job templates (deployments/pools.yaml), GPU quota per team (global
# concurrency limits, deployments/gpu-quota.csv), then every deployment in prefect.yaml with
# its triggers (automations). Idempotent: each object is compared with the server's and
# written only where it differs, so a second run changes nothing (deployments/apply.py).
#   PREFECT_API_URL=http://127.0.0.1:4200/api deployments/apply.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFECT=${PREFECT:-$ROOT/.venv/bin/prefect}
PY=${PY:-$ROOT/.venv/bin/python}
export LOCKGATE_PROJECT_ROOT=${LOCKGATE_PROJECT_ROOT:-$ROOT}
export LOCKGATE_TRAINER_IMAGE=${LOCKGATE_TRAINER_IMAGE:-lockgate-trainer:latest}
# The Docker pool mounts the state folder and Prefect's result folder at their own paths, so
# the release (on the host) reads the fine-tune's result and checkpoints where it wrote them.
export LOCKGATE_HOME=${LOCKGATE_HOME:-$ROOT/.lockgate}
export PREFECT_LOCAL_STORAGE_PATH=${PREFECT_LOCAL_STORAGE_PATH:-${PREFECT_HOME:-$HOME/.prefect}/storage}
mkdir -p "$LOCKGATE_HOME" "$PREFECT_LOCAL_STORAGE_PATH"
# A fine-tune in a container signs the adapter it commits: the Docker pool mounts the folder of
# the signing key pair read-only (make setup's, or the one LOCKGATE_SIGNING__PRIVATE_KEY names).
export LOCKGATE_SIGNING_DIR=${LOCKGATE_SIGNING_DIR:-$(dirname "${LOCKGATE_SIGNING__PRIVATE_KEY:-${XDG_CONFIG_HOME:-$HOME/.config}/lockgate/signing/private-key.pem}")}
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server (e.g. http://127.0.0.1:4200/api)}"

cd "$ROOT"
export PREFECT
PYTHONPATH="$ROOT" exec "$PY" "$ROOT/deployments/apply.py"
