"""The Consent cache of a serving process (auth/consent.py ConsentCache), with real commits and
authentication on: a read may use Consents cached earlier because its AuditEvent INSERT checks, in the
same statement, that no Consent has changed since (storage/policy_version.py); when one has, nothing
is answered from the stale copy, no AuditEvent is left for it, and the read runs again."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from fhir_server.config import Settings
from fhir_server.storage import policy_version
from fhir_server.storage.tables import audit_event
from tests.functional.test_access_policy import RECORD, consent, get, seed, token


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """(``committing_app`` builds its app from these: authentication and the dev issuer on.)"""
    return settings.with_overrides(auth_enabled=True, auth_dev_issuer=True, auth_key_cache_seconds=0)


def audit_count(app: Flask) -> int:
    with app.extensions["fhir"].engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_event)).scalar_one()


def version(app: Flask) -> int:
    with app.extensions["fhir"].engine.connect() as conn:
        return conn.execute(text(f"SELECT {policy_version.CURRENT}")).scalar_one()


def test_a_changed_consent_applies_to_the_next_read_despite_the_cache(committing_app: Flask) -> None:
    app, http = committing_app, committing_app.test_client()
    services = app.extensions["fhir"]
    cache: Any = services.router.consent_cache
    # PostgreSQL only: SQLite writes a read's AuditEvent in a transaction of its own, without the check
    assert (cache is not None) == (services.engine.dialect.name == "postgresql")
    seed(app, RECORD)
    care = token(services.auth, "social-worker", "la:201", purpose="CAREMGT")
    assert get(http, "Observation/health-plain", care).status_code == 200
    before = version(app)
    if cache is not None:
        assert cache.get(None)[0] == before  # held: no Consent query on the next read
    deny = consent({"type": "permit", "provision": [
        {"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                      "code": "CAREMGT"}]}]})
    seed(app, [deny])
    assert version(app) > before  # the triggers on resource raised it in the Consent's transaction
    events = audit_count(app)
    assert get(http, "Observation/health-plain", care).status_code == 404
    assert audit_count(app) == events + 1  # the discarded first attempt left no AuditEvent
    if cache is not None:
        assert cache.get(None)[0] == version(app)  # read afresh
    seed(app, [{**deny, "status": "inactive"}])
    assert get(http, "Observation/health-plain", care).status_code == 200
