"""A database that cannot be reached (refused, out of connections, restarting) is a transient
condition of the service, not a fault of the request or of the server's code: 503 with Retry-After
and an OperationOutcome, so that clients and load balancers try again (RFC 9110 §15.6.4)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server import create_app
from fhir_server.api.errors import database_unavailable
from fhir_server.config import Settings
from fhir_server.periodic import local_beat

from ..conftest import TEST_BASE_URL

# a port nothing listens on: every connection attempt is refused at once
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"


@pytest.fixture
def app():
    settings = Settings(database_url=UNREACHABLE, base_url=TEST_BASE_URL, testing=True,
                        profiles_dir=Path(__file__).resolve().parents[2] / "profiles", auth_enabled=False)
    app = create_app(settings)
    yield app
    # its periodic jobs (outbox sweep, sealer) would fail and log every few seconds for the rest of the run
    local_beat.cancel_owned(app.extensions["fhir"].engine)


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/fhir/Patient/p1", None),
    ("GET", "/fhir/Observation?subject=Patient/p1", None),
    ("POST", "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "Okafor"}]}),
])
def test_an_unreachable_database_is_a_503_with_retry_after(app, method, path, body):
    res = app.test_client().open(path, method=method, json=body,
                                 headers={"Content-Type": "application/fhir+json"} if body else {})
    assert res.status_code == 503, res.get_data(as_text=True)
    assert res.headers["Retry-After"] == "5"
    outcome = res.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"


def test_a_programming_error_is_not_taken_for_an_unavailable_database():
    from sqlalchemy.exc import ProgrammingError

    class Undefined(Exception):
        sqlstate = "42P01"  # undefined_table: our fault, a 500

    assert not database_unavailable(ProgrammingError("SELECT 1", {}, Undefined()))
    assert not database_unavailable(ValueError("not a database error"))
