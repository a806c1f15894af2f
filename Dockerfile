# FinVision Realtime: one image for every role (api, worker, beat, migrate); the command picks.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINRT_ENV=production \
    FINRT_LOG_JSON=true

WORKDIR /app

# Dependencies first (a layer that survives code changes), from pyproject's list.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print(chr(10).join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY celeryconfig.py ./
COPY api ./api
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
