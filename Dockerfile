# The project image that the Docker and Kubernetes work pools run flow runs in
# (deployments/containers.yaml). Build it from the repository root, tagged with the project's
# version, and push it where the workers pull from; `prefect deploy` neither builds nor pushes it:
#   docker build -t trainflow:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_LOGGING_EXTRA_LOGGERS=trainflow

WORKDIR /opt/trainflow

# The pinned environment first, in a layer of its own: a code change does not reinstall TensorFlow.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project, as ./dev installs it (without dependencies: the lock has them all), but not
# editable. The source stays here too: the deployments' pull step makes this the working
# directory, their entrypoints (flows/training.py, flows/retraining.py) are paths relative to it,
# and `--model MODULE:FUNCTION` builders such as examples.small_convnet import from it.
# pyproject.toml names README.md, so the build needs it.
COPY pyproject.toml README.md ./
COPY app ./app
COPY flows ./flows
COPY tasks ./tasks
COPY trainflow ./trainflow
COPY examples ./examples
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# Flow runs run as an unprivileged user with a home of its own (Prefect's and Keras's caches);
# the numeric id lets Kubernetes check runAsNonRoot. The code stays root-owned and read-only;
# `artifacts/` is writable for runs whose `config.artifacts` is a local path (a mounted volume).
RUN useradd --create-home --uid 10001 --user-group trainflow \
    && mkdir artifacts && chown trainflow:trainflow artifacts
USER 10001:10001
