# Production image for the items service.
#
#   docker build -t items-service .
#   docker run --rm -e DATABASE_URL=... items-service migrate   # apply migrations, exit
#   docker run -d  -e DATABASE_URL=... items-service            # serve (default: serve)
#
# Two stages: the builder makes a self-contained virtualenv from the lock file;
# the runtime copies only that venv and the migrations onto the same slim base,
# so no compiler, pip cache or build metadata reaches the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# Bytecode is compiled at install time (pip's default), so a read-only
# runtime never compiles on start.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini is the init process of the runtime image: the statically linked build
# is copied over, so the runtime stage never runs apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY app ./app
COPY models ./models
# Every dependency version comes from the lock file (constraints); the
# project itself is installed as a regular, non-editable package. The
# installers leave afterwards: nothing at run time needs them (~25 MB).
RUN pip install -c requirements.lock . \
    && pip check \
    && python -m pip uninstall --yes pip setuptools wheel


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="items-service" \
      org.opencontainers.image.description="Items HTTP API: Sanic + Tortoise ORM + PostgreSQL" \
      org.opencontainers.image.source="https://github.com/example/items-service"

# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot without a
# passwd lookup and mounted secrets can be granted to it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /usr/bin/tini-static /usr/local/bin/tini
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/items-healthcheck

WORKDIR /app
# `migrate` finds migrations/ relative to the working directory;
# pyproject.toml's [tool.aerich] lets the aerich CLI work here too.
COPY pyproject.toml ./
COPY migrations ./migrations

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENV=production \
    HOST=0.0.0.0 \
    PORT=8000

# /tmp is the only place the app writes (a fresh Prometheus multiprocess
# folder per run, multiprocessing sockets): run with a read-only root and a
# tmpfs/emptyDir there.
USER 10001:10001
EXPOSE 8000

# Liveness only (no database): honours PORT, and TLS when it is enabled.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/items-healthcheck"]

# tini forwards SIGTERM to the Sanic main process only (which drains and stops
# its workers) and reaps orphans; `docker stop` then exits 0 after the drain.
ENTRYPOINT ["tini", "--", "python", "-m", "app"]
CMD ["serve"]
