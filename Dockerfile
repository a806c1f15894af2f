# FinVision Realtime: one image for every role (api, worker, beat, migrate); the command picks.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINRT_ENV=production \
    FINRT_LOG_JSON=true

WORKDIR /app

# Dependencies first (a layer that survives code changes), exactly as locked: every version
# pinned and every file's hash checked, so two builds of one commit install the same thing.
# No development dependency (tests, linters, the embedded Redis) enters the image.
# Regenerate after changing pyproject.toml's dependencies (see docs/operating.md):
#   uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements.lock
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md celeryconfig.py ./
COPY api ./api
COPY core ./core
COPY domain ./domain
COPY finrt ./finrt
COPY models ./models
COPY services ./services
COPY streams ./streams
COPY workers ./workers
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app finrt \
    && mkdir -p /app/var/reports \
    && chown -R finrt /app/var

USER finrt
EXPOSE 8000
# Reports (worker writes, API serves) and beat's schedule live here: mount a shared volume.
VOLUME ["/app/var"]

# SIGTERM: the API closes its streams with a short retry hint and exits within seconds.
STOPSIGNAL SIGTERM
CMD ["finrt", "api", "--host", "0.0.0.0", "--port", "8000"]
