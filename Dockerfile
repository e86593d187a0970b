# batchsync as a container: run a manifest on a schedule (Kubernetes CronJob or Job).
#
#   docker build -t batchsync .
#   docker volume create batchsync-data
#   docker run --rm --read-only -v batchsync-data:/var/lib/batchsync \
#       -v "$PWD/manifest.yaml:/etc/batchsync/manifest.yaml:ro" \
#       --env-file secrets.env batchsync run /etc/batchsync/manifest.yaml
#
# The image runs as uid 10001, so a bind-mounted host folder must be writable by that uid; a named
# volume is initialised from the image's own folder, which already is. secrets.env holds the
# variables the manifest references (client secret and target credentials).
#
# The image holds no secret; credentials come from the environment or mounted files at run time.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchsync ./batchsync
RUN python -m venv /opt/batchsync \
    && /opt/batchsync/bin/pip install --no-compile . \
    && /opt/batchsync/bin/python -m compileall -q /opt/batchsync

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="batchsync" \
      org.opencontainers.image.description="Tenant-wide acquireAccessToken onboarding for Microsoft Entra provisioning"
RUN groupadd --system --gid 10001 batchsync \
    && useradd --system --uid 10001 --gid batchsync --home-dir /var/lib/batchsync --shell /usr/sbin/nologin batchsync \
    && install -d -o batchsync -g batchsync -m 0700 /var/lib/batchsync /var/lib/batchsync/reports
COPY --from=build /opt/batchsync /opt/batchsync
# Reports and every temporary file go under one writable volume, so the root file system can be
# read-only. Python writes no bytecode at run time; the image compiled it at build time.
ENV PATH=/opt/batchsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/var/lib/batchsync \
    HOME=/var/lib/batchsync
VOLUME ["/var/lib/batchsync"]
WORKDIR /var/lib/batchsync
USER 10001:10001
STOPSIGNAL SIGTERM
ENTRYPOINT ["batchsync"]
CMD ["--help"]
