# The Nexus service: API and worker (`nexus up`), or either alone (`nexus serve`, `nexus worker`).
# Give it DATABASE_URL: without one, `nexus up` would start a throw-away embedded PostgreSQL
# inside the container, and its data would go with the container. See docs/SUPABASE.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group nexus

USER nexus
# Listen on every interface of the container (the default, 127.0.0.1, is unreachable from outside).
ENV NEXUS_HOST=0.0.0.0 \
    NEXUS_PORT=3000
EXPOSE 3000

# Probe GET /api/nexus/producer for health (200 healthy or degraded, 503 without the database);
# no HEALTHCHECK here, since the same image also runs `nexus worker`, which serves no HTTP.
CMD ["nexus", "up"]
