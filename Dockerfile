# syntax=docker/dockerfile:1
#
# WinCert Orchestrator: one image for the Celery worker, the WinRM host simulator and the
# `wincert` CLI; the command picks which (see docker-compose.yml, deploy/kubernetes/):
#
#   docker run IMAGE                                        # the worker (default command)
#   docker run IMAGE wincert inventory web01 --store-path My --credential ops --wait
#   docker run IMAGE wincert-simulator serve --config /etc/wincert/simulator.yaml
#
# Stage "build" installs the package and its dependencies into a virtual environment
# (/opt/wincert) with the compilers a source-only dependency may need; stage "runtime" copies
# that environment onto a fresh slim base: no compilers, no pip cache, no sources, no tests.
# It runs as the unprivileged user 10001 and works with a read-only root filesystem (the only
# writable paths it needs are /tmp, where WINCERT_METRICS_DIR lives, and the state directory
# of the simulator).

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers and headers for dependencies built from source here (gssapi, krb5: MIT Kerberos).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libkrb5-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/wincert
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY producer ./producer
COPY worker ./worker
COPY simulator ./simulator
COPY testca ./testca
RUN /opt/wincert/bin/pip install --no-cache-dir . \
 && /opt/wincert/bin/pip uninstall --yes pip \
 && find /opt/wincert -name '*.pyc' -delete \
 && /opt/wincert/bin/python -m compileall -q -j 0 /opt/wincert/lib

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="wincert-orchestrator" \
      org.opencontainers.image.description="Fleet-scale Windows certificate store orchestration over PowerShell Remoting (Celery worker, WinRM host simulator, wincert CLI)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="WinCert Orchestrator team" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# Shared libraries the compiled dependencies link (tests/deploy/test_image.py checks the list
# against the extensions' ldd output): MIT Kerberos GSSAPI for gssapi/krb5 (Kerberos auth).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgssapi-krb5-2 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 wincert \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/wincert --create-home \
        --shell /usr/sbin/nologin wincert
COPY --from=build /opt/wincert /opt/wincert
ENV PATH=/opt/wincert/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WINCERT_METRICS_DIR=/tmp/wincert-metrics \
    WINCERT_METRICS_ADDRESS=0.0.0.0 \
    WINCERT_METRICS_PORT=9818
WORKDIR /var/lib/wincert
USER 10001:10001
EXPOSE 9818
# Celery's warm shutdown: SIGTERM lets running jobs finish (WINCERT_SOFT_SHUTDOWN_TIMEOUT),
# unfinished late-ack jobs go back to the queue. Give the container a stop grace period above
# WINCERT_TASK_SOFT_TIME_LIMIT (compose: stop_grace_period, Kubernetes:
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker.app", "worker", "--loglevel", "INFO", "--pool", "prefork", \
     "--hostname", "wincert@%h", "--without-mingle", "--without-gossip"]
