# One image for every role: api, worker and migrations (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TRAINYARD_DATA_DIR=/data
WORKDIR /srv/trainyard

COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
RUN pip install -e . && useradd --create-home --uid 1000 trainyard && mkdir -p /data \
    && chown trainyard /data
COPY migrations ./migrations
COPY alembic.ini ./
COPY frontend ./frontend
COPY samples ./samples

USER trainyard
EXPOSE 8000
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
