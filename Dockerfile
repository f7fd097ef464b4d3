# The operator's image: `python -m hpo_operator [kopf run options]` as a non-root user.
# Build: docker build -t hpo-operator:0.1.0 .   (the Helm chart's default image is hpo-operator:<appVersion>)
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Only what the package build needs (see .dockerignore); installed, then the sources are dropped.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN pip install --no-cache-dir . \
    && rm -rf /src

# A fixed numeric UID/GID so that runAsNonRoot can verify it (the chart runs as 65532:65532).
RUN groupadd --system --gid 65532 hpo \
    && useradd --system --uid 65532 --gid 65532 --home-dir /home/hpo --create-home \
       --shell /usr/sbin/nologin hpo
USER 65532:65532
WORKDIR /home/hpo

# 8080: kopf's health endpoint (--liveness=http://0.0.0.0:8080/healthz); 9090: Prometheus metrics
# when HPO_METRICS_PORT=9090.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "hpo_operator"]
