#!/usr/bin/env bash
# A local Prefect server (API + UI on http://127.0.0.1:4200) on PostgreSQL, as in production.
# PostgreSQL's cluster lives in .lockgate/postgres (created on first use, trust authentication
# on 127.0.0.1 only, so no password exists to leak); it is stopped when the server stops.
#   make server-pg        (PGPORT=5433 picks PostgreSQL's port)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGPORT=${PGPORT:-5433}
DIR="$ROOT/.lockgate/postgres"
BIN=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)")")
if [ ! -x "$BIN/pg_ctl" ]; then
  echo "server-pg: PostgreSQL's server is missing; install it (apt-get install postgresql)" >&2
  exit 2
fi
as_pg() {
  # PostgreSQL refuses to run as root: the package's `postgres` user runs it.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  echo "server-pg: creating the PostgreSQL cluster in $DIR/data"
  as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U lockgate -E UTF8 >/dev/null
fi
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w \
  -o "-p $PGPORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null' EXIT
"$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U lockgate -d postgres -tAc "select 1 from pg_database where datname='prefect'" \
  | grep -q 1 || "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U lockgate prefect
echo "server-pg: PostgreSQL on 127.0.0.1:$PGPORT (log: $DIR/postgres.log)"

export PREFECT_HOME=${PREFECT_HOME:-$ROOT/.lockgate/prefect-pg}
export PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://lockgate@127.0.0.1:$PGPORT/prefect"
"$ROOT/.venv/bin/python" -m prefect server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}"
