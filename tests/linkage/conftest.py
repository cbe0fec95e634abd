"""Fixtures for linkage tests: agency Patients as the mappings load them, and the drain."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from linkage.store import CACHE

AGENCY_TAG = "https://w3id.org/sg-fhir/CodeSystem/source-agency"
NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture(autouse=True)
def fresh_counts():
    """Population and name counts are cached per process; each test starts from its own data."""
    CACHE.clear()
    yield
    CACHE.clear()


def agency_patient(agency: str, given: str | None, family: str | None, birth_date: str, *, gender: str = "female",
                   postcode: str | None = None, identifiers: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """A Patient shaped like an agency mapping's output (docs/formats/)."""
    patient: dict[str, Any] = {"resourceType": "Patient", "meta": {"tag": [{"system": AGENCY_TAG, "code": agency}]},
                               "gender": gender, "birthDate": birth_date}
    if identifiers:
        patient["identifier"] = [{"system": s, "value": v} for s, v in identifiers]
    if given or family:
        patient["name"] = [{"use": "official", **({"family": family} if family else {}),
                            **({"given": [given]} if given else {})}]
    if postcode:
        patient["address"] = [{"use": "home", "postalCode": postcode}]
    return patient


@pytest.fixture
def drain(app) -> Callable[[], int]:
    """Run the outbox drain (with the linkage consumer only) on the test's connection."""
    from fhir_server.worker import drain_batch
    from linkage.consumer import link_on_write

    conn = app.extensions["fhir"].repo._bound

    def run() -> int:
        total = 0
        while done := drain_batch(conn, consumers=[link_on_write]):
            total += done
        return total

    return run
