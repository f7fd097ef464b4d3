# The operator's image: `python3 -m hpo_operator [kopf run options]` as a non-root user.
# Build: docker build -t hpo-operator:0.1.0 .   (the Helm chart's default image is hpo-operator:<appVersion>)
#        docker build --build-arg FLAVOUR=gp -t hpo-operator:0.1.0-gp .   (the chart's image.flavour: gp)
# `make image` builds the same image without Docker (hack/image.sh); tests/unit/test_image.py keeps
# the two recipes equal: Debian bookworm's python3, the pins of deploy/image/requirements.txt.

# Wheels only, installed into a folder that is copied into the image below (no pip in the image).
FROM debian:bookworm-slim AS wheels
# The gp flavour (--build-arg FLAVOUR=gp, tag <version>-gp): PyTorch too, for algorithm gp; the
# PyPI wheel for Linux brings CUDA's libraries, gigabytes more.
ARG FLAVOUR=""
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY deploy/image/requirements.txt deploy/image/requirements-gp.txt ./deploy/image/
RUN pip install --break-system-packages --no-compile --no-deps --only-binary=:all: --require-hashes \
        --target /site -r deploy/image/requirements.txt
RUN if [ "$FLAVOUR" = gp ]; then pip install --break-system-packages --no-compile --no-deps --only-binary=:all: \
        --require-hashes --target /site -r deploy/image/requirements-gp.txt; fi
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN pip wheel --no-deps --wheel-dir /wheel . \
    && pip install --break-system-packages --no-compile --no-deps --target /site /wheel/*.whl \
    && rm -rf /site/bin \
    && find /site -depth -type d \( -name tests -o -name test -o -name __pycache__ \) -exec rm -rf {} + \
    && find /site -name '*.pyi' -delete

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/share/locale \
    && cd /usr/lib/python3.11 && rm -rf test idlelib tkinter lib2to3 ensurepip pydoc_data
COPY --from=wheels /site /usr/local/lib/python3.11/dist-packages
# The root filesystem is read-only at run time: bytecode is compiled now and trusted as it is.
RUN python3 -m compileall -q --invalidation-mode unchecked-hash /usr/local/lib/python3.11/dist-packages \
    && echo "hpo:x:65532:65532:hpo-operator:/tmp:/usr/sbin/nologin" >>/etc/passwd \
    && echo "hpo:x:65532:" >>/etc/group

ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# A fixed numeric UID/GID so that runAsNonRoot can verify it (the chart runs as 65532:65532).
USER 65532:65532
WORKDIR /tmp
# 8080: kopf's health endpoint (--liveness=http://0.0.0.0:8080/healthz); 9090: Prometheus metrics
# when HPO_METRICS_PORT=9090.
EXPOSE 8080 9090
ENTRYPOINT ["python3", "-m", "hpo_operator"]
