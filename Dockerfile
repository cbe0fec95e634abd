# One image for the API (gunicorn via `fhir-server serve`) and the Celery worker.
# Build: docker build -t safeguarding-fhir-server .    Run everything: docker compose up
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 fhir
WORKDIR /app

# Editable install from the source tree: migrations/ and profiles/ are found next to fhir_server/
# (fhir_server.config.REPO_ROOT), exactly as in a checkout. .dockerignore keeps .venv/, var/ and
# caches out, so every package pyproject.toml lists comes along.
COPY . .
RUN pip install -e . && mkdir -p /app/var && chown fhir /app/var

USER fhir
EXPOSE 8080
# The default database is SQLite in /app/var; docker-compose.yml points FHIR_DATABASE_URL at PostgreSQL.
CMD ["sh", "-c", "fhir-server migrate && exec fhir-server serve --host 0.0.0.0 --port 8080"]
