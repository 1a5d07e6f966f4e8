# The trainer image for the GPU spot pool: Axolotl in its own environment at /opt/trainer,
# plus the app environment that runs the finetune flow and launches `axolotl train`.
#   docker build -f infra/docker/trainer.Dockerfile -t lockgate-trainer .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    LOCKGATE_PROJECT_ROOT=/opt/lockgate LOCKGATE_TRAINING__AXOLOTL_BIN=/opt/trainer/bin/axolotl LOCKGATE_TRAINING__DEVICE=cuda \
    DO_NOT_TRACK=1 AXOLOTL_DO_NOT_TRACK=1
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/lockgate
COPY requirements requirements
# Axolotl pins a stack that cannot share an environment with Prefect: two venvs.
RUN python3.11 -m venv /opt/trainer \
 && /opt/trainer/bin/pip install --no-cache-dir "$(grep -E '^torch==' requirements/trainer.lock)" \
 && /opt/trainer/bin/pip install --no-cache-dir -r requirements/trainer.lock \
 && python3.11 -m venv /opt/app \
 && /opt/app/bin/pip install --no-cache-dir "$(grep -E '^torch==' requirements/app.lock)" \
 && /opt/app/bin/pip install --no-cache-dir -r requirements/app.lock
COPY lockgate lockgate
COPY tasks tasks
COPY flows flows
COPY profiles profiles
COPY prefect.yaml pyproject.toml ./
ENV PATH=/opt/app/bin:$PATH PYTHONPATH=/opt/lockgate
