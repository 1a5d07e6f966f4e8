# PostgreSQL's server binaries for the live tests (tests/live.py starts a throw-away cluster
# with initdb/pg_ctl; as root it runs as the package's `postgres` user). Idempotent: installs
# Debian's package only when no pg_ctl is found. Sourced by .ci/run.
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  echo "ci: installing PostgreSQL (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
