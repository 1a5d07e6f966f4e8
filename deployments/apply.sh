#!/usr/bin/env bash
# Apply Lockgate's Prefect environment to the server PREFECT_API_URL points at:
# work pools, GPU quota per team (global concurrency limits), then every deployment in
# prefect.yaml. Idempotent: run it again after any change.
#   PREFECT_API_URL=http://127.0.0.1:4200/api deployments/apply.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFECT=${PREFECT:-$ROOT/.venv/bin/prefect}
export LOCKGATE_PROJECT_ROOT=${LOCKGATE_PROJECT_ROOT:-$ROOT}
export LOCKGATE_TRAINER_IMAGE=${LOCKGATE_TRAINER_IMAGE:-lockgate-trainer:latest}
# The Docker pool mounts the state folder and Prefect's result folder at their own paths, so
# the release (on the host) reads the fine-tune's result and checkpoints where it wrote them.
export LOCKGATE_HOME=${LOCKGATE_HOME:-$ROOT/.lockgate}
export PREFECT_LOCAL_STORAGE_PATH=${PREFECT_LOCAL_STORAGE_PATH:-${PREFECT_HOME:-$HOME/.prefect}/storage}
mkdir -p "$LOCKGATE_HOME" "$PREFECT_LOCAL_STORAGE_PATH"
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server (e.g. http://127.0.0.1:4200/api)}"

"$PREFECT" work-pool create lockgate-cpu --type process --overwrite
# Spot fine-tunes in containers on this machine (finetune-docker: the trainer image of make images).
"$PREFECT" work-pool create lockgate-docker --type docker --overwrite
# The GPU pool needs the prefect-kubernetes worker; its GPU/spot job template is
# deployments/gpu-job-template.json (nodeSelector, tolerations, nvidia.com/gpu).
"$PREFECT" work-pool create lockgate-gpu --type kubernetes --overwrite \
  --base-job-template "$ROOT/deployments/gpu-job-template.json"

# GPU quota per team: one global concurrency limit per team, slots = GPUs.
while IFS=, read -r team gpus; do
  [ -z "$team" ] || [ "${team:0:1}" = "#" ] && continue
  "$PREFECT" gcl create "gpu-$team" --limit "$gpus" 2>/dev/null || "$PREFECT" gcl update "gpu-$team" --limit "$gpus"
done < "$ROOT/deployments/gpu-quota.csv"

cd "$ROOT"
"$PREFECT" --no-prompt deploy --all
