# Campaign reminder service. No Docker engine runs on the development machines, so this
# file is kept plain and reviewable; `scripts/test` exercises the same entry points.
FROM python:3.11-slim-trixie

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    SERVICE_STATE_DIR=/state \
    SERVICE_SCHEDULE=/app/schedules/jilin-2023.yaml \
    SERVICE_CONTACTS=/app/contacts \
    SERVICE_TEMPLATES=/app/templates

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir .
COPY schedules ./schedules
COPY contacts ./contacts
COPY templates ./templates

# Non-root; the state folder holds the SQLite file (and its -wal/-shm) and the file outbox:
# personal data, so it belongs to the service user alone (0700; the service creates its
# files 0600). A named volume mounted here starts as a copy of this folder, mode included.
RUN useradd --system --uid 10001 --home-dir /state service \
    && mkdir -p /state && chown service:service /state && chmod 0700 /state
USER service
VOLUME ["/state"]

# Exec form: Python is PID 1 and receives SIGTERM directly (the daemon drains in-flight
# sends). Override with `service migrate` as an init step when several replicas share
# PostgreSQL (SERVICE_DATABASE_URL=postgresql://...).
ENTRYPOINT ["service"]
CMD ["run"]
