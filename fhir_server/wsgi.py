"""WSGI entry point: ``gunicorn fhir_server.wsgi:app`` (what ``fhir-server serve`` runs).

Settings come from the ``FHIR_*`` environment variables (README.md, "Configuration"). Each gunicorn
worker imports this module after the fork, so every worker has its own connection pool.
"""
from __future__ import annotations

from . import create_app
from .config import Settings
from .worker import install_outbox_drain

settings = Settings.from_env()
app = create_app(settings)
# after-commit work: outbox rows are drained by Celery (FHIR_BROKER_URL) or in-process (eager)
install_outbox_drain(app.extensions["fhir"].repo)
