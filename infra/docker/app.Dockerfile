# The app image: Prefect, the library and its engines (CPU). Build from the repository root:
#   docker build -f infra/docker/app.Dockerfile -t lockgate-app .
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 LOCKGATE_PROJECT_ROOT=/opt/lockgate \
    DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false RAGAS_DO_NOT_TRACK=true
WORKDIR /opt/lockgate
COPY requirements/app.lock requirements/app.lock
# torch first, from the CPU index, so no CUDA wheels are pulled for the app side.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "$(grep -E '^torch==' requirements/app.lock)" \
 && pip install --no-cache-dir -r requirements/app.lock
COPY lockgate lockgate
COPY tasks tasks
COPY flows flows
COPY profiles profiles
COPY examples examples
COPY prefect.yaml pyproject.toml ./
ENV PYTHONPATH=/opt/lockgate
ENTRYPOINT ["python", "-m", "flows"]
CMD ["--help"]
