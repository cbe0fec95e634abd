"""A deleted resource the caller could not see before its deletion is, to that caller, an id that
never existed (policy.Visibility.allows_deleted applies Visibility.clause to the policy columns the
deletion kept), through HTTP on SQLite and PostgreSQL: its read, the vread of its deletion and a
DELETE with If-Match answer exactly as for an unknown id, while a caller who could see it is still
told it was deleted (410, and If-Match checked against its versions)."""
from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from fhir_server.auth.service import AuthService
from fhir_server.fhir.instants import utcnow
from fhir_server.storage.tables import resource
from tests.functional.test_access_policy import R, SDV, auth, get, http, obs, seeded, send  # noqa: F401
from tests.functional.test_auth import auth_app, auth_conn, auth_settings  # noqa: F401 - fixtures
from tests.functional.test_policy_columns import (assert_deleted_as_unknown, client_token, columns, columns_version,
                                                  outcome)

UNKNOWN = "no-such-observation"


def assert_unknown(http: FlaskClient, tok: str, res_id: str, deletion: int) -> None:  # noqa: F811
    """Every answer about the deleted ``Observation/res_id`` equals the one about an unknown id."""
    theirs, never = get(http, f"Observation/{res_id}", tok), get(http, f"Observation/{UNKNOWN}", tok)
    assert theirs.status_code == 404, theirs.get_data(as_text=True)
    assert outcome(theirs, res_id) == outcome(never, UNKNOWN)
    for version in range(1, deletion + 2):
        theirs = get(http, f"Observation/{res_id}/_history/{version}", tok)
        never = get(http, f"Observation/{UNKNOWN}/_history/{version}", tok)
        assert theirs.status_code == 404, (version, theirs.get_data(as_text=True))
        assert outcome(theirs, res_id) == outcome(never, UNKNOWN), version
    assert_deleted_as_unknown(http, tok, f"Observation/{res_id}", f"Observation/{UNKNOWN}", deletion)
    assert get(http, f"Observation/{res_id}/_history", tok).status_code == 404


def assert_deleted(http: FlaskClient, tok: str, res_id: str, deletion: int) -> None:  # noqa: F811
    """A caller who could see ``Observation/res_id`` is told it was deleted, as before."""
    assert get(http, f"Observation/{res_id}", tok).status_code == 410
    assert get(http, f"Observation/{res_id}/_history/{deletion}", tok).status_code == 410
    res = send(http, "DELETE", f"Observation/{res_id}", None, tok, **{"If-Match": f'W/"{deletion - 1}"'})
    assert res.status_code == 412, res.get_data(as_text=True)
    res = send(http, "DELETE", f"Observation/{res_id}", None, tok, **{"If-Match": f'W/"{deletion}"'})
    assert res.status_code == 204, res.get_data(as_text=True)


def test_a_deleted_labelled_resource_is_unknown_to_whom_its_labels_withheld_it(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    police = client_token(auth, "police-app", "police", "police:01", purpose="safeguarding")
    care = client_token(auth, "la-app", "social-worker", "la:201")  # SDV and R are withheld for care
    # several versions, still labelled, then deleted
    res = send(http, "PUT", "Observation/da-notice",
               obs("da-notice", "police/01", "Domestic abuse incident (reviewed)", "Patient/child", SDV, R), police)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert get(http, "Observation/da-notice", care).status_code == 404
    assert send(http, "DELETE", "Observation/da-notice", None, police).status_code == 204
    deletion = columns_version(seeded, "Observation", "da-notice")
    assert deletion == 3 and columns(seeded, "Observation", "da-notice")[0] == 1 | 64  # kept by the deletion

    assert_unknown(http, care, "da-notice", deletion)
    assert columns_version(seeded, "Observation", "da-notice") == deletion  # nothing written
    assert_deleted(http, police, "da-notice", deletion)


def test_a_deleted_resource_of_a_hidden_source_agency_is_unknown(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    trust = client_token(auth, "trust-app", "health-safeguarding", "health:RXX")
    police = client_token(auth, "police-app", "police", "police:01", purpose="safeguarding")  # health hidden
    care = client_token(auth, "la-app", "social-worker", "la:201")
    assert get(http, "Observation/health-plain", police).status_code == 404
    assert send(http, "DELETE", "Observation/health-plain", None, trust).status_code == 204
    deletion = columns_version(seeded, "Observation", "health-plain")

    assert_unknown(http, police, "health-plain", deletion)
    # unlabelled: still 410 to everyone else allowed the type
    assert get(http, "Observation/health-plain", care).status_code == 410
    assert get(http, f"Observation/health-plain/_history/{deletion}", care).status_code == 410
    assert_deleted(http, trust, "health-plain", deletion)


def test_an_unlabelled_deleted_resource_still_answers_gone(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    la = client_token(auth, "la-app", "social-worker", "la:201")
    school = client_token(auth, "dsl-app", "school-dsl", "education:201", purpose="safeguarding")
    police = client_token(auth, "police-app", "police", "police:01", purpose="safeguarding")
    assert send(http, "DELETE", "Observation/attendance", None, school).status_code == 204
    deletion = columns_version(seeded, "Observation", "attendance")
    for tok in (la, police):
        assert get(http, "Observation/attendance", tok).status_code == 410
        assert get(http, f"Observation/attendance/_history/{deletion}", tok).status_code == 410
    assert_deleted(http, school, "attendance", deletion)


def test_a_deleted_row_written_without_the_columns_is_unknown(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    """Fail closed: a deletion row stored by SQL that bypassed the repository (the defaults: every
    label bit, no known agency) is not confirmed to a restricted caller who is withheld a label."""
    with seeded.extensions["fhir"].repo.unit_of_work() as uow:
        uow.conn.execute(insert(resource).values(res_type="Observation", res_id="raw-deleted", version_id=2,
                                                 last_updated=utcnow(), deleted=True, content=None))
    assert columns(seeded, "Observation", "raw-deleted") == (-1, None, None)
    care = client_token(auth, "la-app", "social-worker", "la:201")
    police = client_token(auth, "police-app", "police", "police:01", purpose="safeguarding")
    for tok in (care, police):
        theirs, never = get(http, "Observation/raw-deleted", tok), get(http, f"Observation/{UNKNOWN}", tok)
        assert theirs.status_code == 404, theirs.get_data(as_text=True)
        assert outcome(theirs, "raw-deleted") == outcome(never, UNKNOWN)
        res = send(http, "DELETE", "Observation/raw-deleted", None, tok, **{"If-Match": 'W/"2"'})
        assert res.status_code == 412, res.get_data(as_text=True)
