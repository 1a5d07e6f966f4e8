# Prometheus and promtool for the monitoring tests (tests/ops/test_monitoring.py: the shipped
# scrape configuration and rules checked with promtool, and a real Prometheus scraping a live
# gateway). Idempotent: installs Debian's package only when promtool is not on the PATH. The
# package's own service is not started (the tests start prometheus on a free port).
if ! command -v promtool >/dev/null 2>&1; then
  echo "ci: installing prometheus (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
export LOCKGATE_PROMETHEUS=${LOCKGATE_PROMETHEUS:-$(command -v prometheus)}
