"""Fixtures for triage tests: agency resources as the mappings write them, and the outbox drain."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from linkage.store import CACHE

AGENCY_TAG = "https://w3id.org/sg-fhir/CodeSystem/source-agency"
CS = "https://w3id.org/sg-fhir/CodeSystem/"
NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture(autouse=True)
def fresh_counts():
    CACHE.clear()
    yield
    CACHE.clear()


@pytest.fixture
def drain(app) -> Callable[[], int]:
    """Run the outbox drain (record linkage, then rescoring) on the test's connection."""
    from fhir_server.worker import drain_batch
    from linkage.consumer import link_on_write
    from triage.consumer import rescore_on_write

    conn = app.extensions["fhir"].repo._bound

    def run() -> int:
        total = 0
        while done := drain_batch(conn, consumers=[link_on_write, rescore_on_write]):
            total += done
        return total

    return run


def day(days_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).date().isoformat()


def tagged(agency: str, content: dict[str, Any]) -> dict[str, Any]:
    return {**content, "meta": {"tag": [{"system": AGENCY_TAG, "code": agency}]}}


def patient(agency: str, nhs: str, given: str, family: str, born: str, gender: str = "female") -> dict[str, Any]:
    return tagged(agency, {"resourceType": "Patient", "identifier": [{"system": NHS, "value": nhs}],
                           "name": [{"family": family, "given": [given]}], "gender": gender, "birthDate": born})


def observation(agency: str, subject: str, system: str, code: str, days_ago: float) -> dict[str, Any]:
    return tagged(agency, {"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": CS + system, "code": code}]},
                           "subject": {"reference": subject}, "effectiveDateTime": day(days_ago)})


def episode(agency: str, subject: str, code: str, start_days_ago: float, *, manager: str | None = None,
            status: str = "active", end_days_ago: float | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"resourceType": "EpisodeOfCare", "status": status,
                          "type": [{"coding": [{"system": CS + "episode-type", "code": code}]}],
                          "patient": {"reference": subject}, "period": {"start": day(start_days_ago)}}
    if end_days_ago is not None:
        ep["period"]["end"] = day(end_days_ago)
    if manager:
        ep["careManager"] = {"reference": manager, "display": "Sam Worker"}
    return tagged(agency, ep)
