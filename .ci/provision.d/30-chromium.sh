# Headless Chromium for the browser test of the Prefect UI (tests/ops/test_ui_browser.py drives
# it with Playwright's Python package; `playwright install` is never run: it downloads).
# Idempotent: installs Debian's package only when no chromium is on the PATH.
if ! command -v chromium >/dev/null 2>&1; then
  echo "ci: installing chromium (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
export LOCKGATE_CHROMIUM=${LOCKGATE_CHROMIUM:-$(command -v chromium)}
