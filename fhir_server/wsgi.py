"""WSGI entry point: ``gunicorn fhir_server.wsgi:app`` (what ``fhir-server serve`` runs).

Settings come from the ``FHIR_*`` environment variables (README.md, "Configuration"). Each gunicorn
worker imports this module after the fork, so every worker has its own connection pool; the
after-commit outbox drain is wired by ``create_app`` (fhir_server/worker.py).
"""
from __future__ import annotations

from . import create_app
from .config import Settings

settings = Settings.from_env()
app = create_app(settings)
