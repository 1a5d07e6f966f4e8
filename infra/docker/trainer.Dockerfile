# The trainer image for the spot pools (Docker locally, Kubernetes GPU nodes in production):
# the app image (which runs the finetune flow) plus Axolotl's own environment at
# /opt/trainer (its pins cannot share an environment with Prefect). Built by `make images`
# (scripts/images.sh) FROM lockgate-app:<hash>; tagged lockgate-trainer:<hash>.
# On GPU nodes build with TORCH=torch==2.13.0 and no CPU wheel in wheels/: PyPI's torch
# wheel carries its CUDA runtime, so the same Debian base serves both.
ARG APP_IMAGE
FROM ${APP_IMAGE}
ARG TORCH=torch==2.13.0
COPY requirements/trainer.lock /opt/requirements/trainer.lock
RUN python3 -m venv /opt/trainer \
 && export PIP_FIND_LINKS=/opt/wheels && { [ ! -s /opt/ca.crt ] || export PIP_CERT=/opt/ca.crt; } \
 && /opt/trainer/bin/pip install --quiet "${TORCH}" \
 && /opt/trainer/bin/pip install --quiet -r /opt/requirements/trainer.lock
ENV LOCKGATE_TRAINING__AXOLOTL_BIN=/opt/trainer/bin/axolotl AXOLOTL_DO_NOT_TRACK=1
