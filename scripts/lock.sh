#!/usr/bin/env bash
# Re-resolve the .in files into fresh .lock files, in throw-away environments.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
for name in app trainer; do
  tmp=$(mktemp -d)
  "$PY" -m venv "$tmp/env"
  "$tmp/env/bin/pip" install --quiet "$(grep -E '^torch==' "$ROOT/requirements/$name.in")"
  "$tmp/env/bin/pip" install --quiet -r "$ROOT/requirements/$name.in"
  if [ -f "$ROOT/requirements/$name-nodeps.in" ]; then
    "$tmp/env/bin/pip" install --quiet --no-deps -r "$ROOT/requirements/$name-nodeps.in"
  fi
  { echo "# Generated from $name.in by \`make lock\` (pip freeze of a working environment). Do not edit."
    "$tmp/env/bin/pip" freeze | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'; } > "$ROOT/requirements/$name.lock"
  rm -rf "$tmp"
  echo "wrote requirements/$name.lock"
done
