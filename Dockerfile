# The Nexus service: API and worker (`nexus up`), or either alone (`nexus serve`, `nexus worker`).
# Give it DATABASE_URL: the image has no embedded PostgreSQL (the `embedded` extra is left out),
# so `nexus up` without one stops at once and says so. See docs/SUPABASE.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The extras to include: the extractors' SDKs (`anthropic`, `openai`; both by default), and
# `otel` for OpenTelemetry export. `--build-arg EXTRAS=otel` gives an image that runs only the
# offline rules extractor.
ARG EXTRAS=anthropic,openai

WORKDIR /app
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY src ./src
# The same versions the tests passed with (requirements.lock as constraints).
RUN pip install -c requirements.lock ".[${EXTRAS}]" \
    && useradd --create-home --uid 10001 --user-group nexus

USER nexus
# Listen on every interface of the container (the default, 127.0.0.1, is unreachable from outside).
ENV NEXUS_HOST=0.0.0.0 \
    NEXUS_PORT=3000
EXPOSE 3000

# Probes: GET /healthz (liveness: the process answers, no database call) and GET /readyz
# (readiness: database reachable and migrated; 503 otherwise) on NEXUS_PORT. A container running
# `nexus worker` answers both on NEXUS_WORKER_METRICS_PORT when it is set. No HEALTHCHECK here,
# since which port to probe depends on the command the container runs.
CMD ["nexus", "up"]
