"""subscriptions/access.py without a database: the recorded context round-trips, break-glass is
refused, and a missing record fails closed."""
from __future__ import annotations

import json

import pytest

from fhir_server.auth.errors import AccessDenied
from fhir_server.repository.context import RequestContext
from subscriptions.access import Gate, context, record

BASE = "http://example.org/fhir"


def user(**changes: object) -> RequestContext:
    return RequestContext(base_url=BASE, client_id="school-app", agency="education:201", practitioner="Practitioner/p1",
                          scopes=frozenset({"user/Flag.rs", "user/Subscription.cruds"}), purpose_of_use="safeguarding",
                          role="school-dsl", authenticated=True, issuer="dev").with_changes(**changes)


def test_the_recorded_context_is_json_and_stands_for_the_same_caller() -> None:
    stored = json.loads(json.dumps(record(user())))
    assert stored["scopes"] == ["user/Flag.rs", "user/Subscription.cruds"]
    again = context(stored, BASE)
    assert again is not None
    for name in ("client_id", "agency", "practitioner", "scopes", "purpose_of_use", "role", "authenticated",
                 "issuer"):
        assert getattr(again, name) == getattr(user(), name), name


def test_break_glass_is_never_recorded() -> None:
    with pytest.raises(AccessDenied):
        record(user(purpose_of_use="BTG", break_glass_reason="emergency"))


def test_no_record_matches_nothing_and_an_unrestricted_one_everything() -> None:
    flag = {"resourceType": "Flag", "status": "active"}
    closed = Gate(None, None, BASE)  # type: ignore[arg-type] - no query is made without a context
    assert not closed.may_read_type("Flag") and not closed.allows("Flag", flag)
    assert context({"client_id": "x"}, BASE) is None  # unreadable: no scopes list
    unauthenticated = Gate(None, record(RequestContext(base_url=BASE)), BASE)  # type: ignore[arg-type]
    assert unauthenticated.allows("Observation", {"resourceType": "Observation"})
    system = Gate(None, record(RequestContext.system(BASE)), BASE)  # type: ignore[arg-type]
    assert system.allows("Observation", {"resourceType": "Observation"})
