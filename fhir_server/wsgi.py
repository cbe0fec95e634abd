"""WSGI entry point: ``gunicorn fhir_server.wsgi:app`` (what ``fhir-server serve`` runs).

Settings come from the ``FHIR_*`` environment variables (README.md, "Configuration"). Each gunicorn
worker imports this module after the fork, so every worker has its own connection pool; the
after-commit outbox drain is wired by ``create_app`` (fhir_server/worker.py).
"""
from __future__ import annotations

import gc

from . import create_app
from .config import Settings

settings = Settings.from_env()
app = create_app(settings)
# $intervention-impact imports its statistics stack (numpy, statsmodels, scipy: ~1.7 s) at its first
# call (impact/__init__.py) so that `fhir-server import` and the Celery workers never load it; a
# serving worker loads it here, at boot, so that no user's first estimate pays for it.
import impact.operation  # noqa: E402,F401
# The app's long-lived objects (models, registries, compiled extractors) are never garbage: move
# them out of the collector's sight, and collect the young generation less often. A request makes
# many short-lived dicts; with the default threshold (700) collections were the p95 tail of
# $everything (docs/benchmarks.md).
gc.freeze()
gc.set_threshold(50_000, 20, 20)
