# syntax=docker/dockerfile:1
#
# sipwatch container image.
#
#   docker build -t sipwatch:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg VCS_REF="$(git rev-parse HEAD)" \
#     --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Two stages: the builder turns the source tree into wheels (sipwatch and every dependency)
# and installs them into a venv at /opt/sipwatch; the final stage copies only that venv onto
# a clean slim image, so no compiler, pip cache or source tree ships.  Both stages use the
# same base image: the venv's bin/python is a symlink to /usr/local/bin/python3.11, which
# must exist at the same path in the final image.
#
# Deployment (docker compose next to jambonz, socket proxy, secrets): docs/deployment.md.
# Checked in CI by .ci/deploy-lint.sh (hadolint + .ci/dockerfile_check.py); there is no
# Docker engine in CI, so the image itself is not built there.

# Pinned by full tag (patch release + Debian release) for reproducible rebuilds; bump
# deliberately.  Pin by digest too (python:3.11.14-slim-bookworm@sha256:...) where your
# registry policy asks for it.
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# A C compiler for sipwatch's own compiled hot path (sipwatch/ingest/_speedups.pyx, Cython:
# pip fetches Cython as a build requirement of pyproject.toml) and for dependencies without a
# wheel for the target platform (asyncmy is a Cython extension; x86_64 and aarch64 get wheels,
# e.g. armv7 does not).  It stays in this stage.  Debian package versions are not pinned: they change with every point release and a
# pin would break the build, while the base image tag already fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole (filtered, see .dockerignore) tree: the wheel build decides what it packages.
COPY . /src

# `pip wheel .` builds sipwatch's wheel (PEP 517, setuptools from pyproject.toml) plus a wheel
# for every dependency; the venv is then installed from those wheels only (--no-index), so
# what is installed is exactly what was just built.  The `kubernetes` extra is included: one
# image runs in all three deployment modes, and in a pod it follows the jambonz pods through
# the Kubernetes API (kubernetes_asyncio, ~50 MB, left out of a plain `pip install sipwatch`).
# The image must run the compiled parser: `sipwatch --version` names the implementation, and
# a build that fell back to pure Python (setup.py makes a failed compile a warning) fails here.
# pip and setuptools are removed from the runtime venv afterwards: nothing installs packages
# at run time.
RUN pip wheel --no-cache-dir --wheel-dir /wheels "/src[kubernetes]" \
    && python -m venv /opt/sipwatch \
    && /opt/sipwatch/bin/pip install --no-cache-dir --no-index --find-links /wheels "sipwatch[kubernetes]" \
    && /opt/sipwatch/bin/sipwatch --version \
    && /opt/sipwatch/bin/python -c "from sipwatch.ingest import speedups; assert speedups.IMPLEMENTATION == 'compiled'" \
    && /opt/sipwatch/bin/pip uninstall --yes pip setuptools \
    && install -m 0644 /src/deploy/healthcheck.py /opt/sipwatch/healthcheck.py


FROM python:3.11.14-slim-bookworm

ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown

LABEL org.opencontainers.image.title="sipwatch" \
      org.opencontainers.image.description="Watch jambonz SBC logs, explain SIP REGISTER failures from the jambonz database, alert on-call and optionally fix them." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="sipwatch maintainers" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# A fixed UID/GID, so file permissions on the host (secret files, the config, the kill-switch
# directory) can be granted to it before the container exists: chown 10001:10001.
# /var/lib/sipwatch is the state directory (checkpoints: where each followed log stood, so a
# restarted container neither counts lines again nor skips what was logged meanwhile).  It is
# created here owned by that user, so a fresh named volume mounted on it is writable too.
RUN groupadd --system --gid 10001 sipwatch \
    && useradd --system --uid 10001 --gid sipwatch --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin sipwatch \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/sipwatch

COPY --from=builder /opt/sipwatch /opt/sipwatch

# SIPWATCH_LISTEN: the image is reached through a published port, so listen on all
# interfaces of the container's own network namespace (the compose file publishes it on the
# host's loopback by default).  SIPWATCH_STATE_DIRECTORY: the volume below.
ENV PATH="/opt/sipwatch/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIPWATCH_LISTEN=0.0.0.0:9466 \
    SIPWATCH_STATE_DIRECTORY=/var/lib/sipwatch

# The checkpoints must outlive the container: mount a named volume here (the compose file
# does); without one Docker makes an anonymous volume, which survives a restart of the
# container but not its removal (`docker compose up` after an image change).
VOLUME ["/var/lib/sipwatch"]

USER 10001:10001
WORKDIR /opt/sipwatch

EXPOSE 9466

# Liveness through /healthz.  The slim image has no curl or wget: the check is a stdlib-only
# Python script (deploy/healthcheck.py) that derives the URL from SIPWATCH_LISTEN.
# /readyz (every log source connected) is deliberately not the health check: a stopped
# drachtio container would make Docker mark sipwatch unhealthy, although sipwatch is the
# thing reporting the problem.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/sipwatch/bin/python", "-I", "/opt/sipwatch/healthcheck.py"]

ENTRYPOINT ["sipwatch"]
CMD ["run"]
