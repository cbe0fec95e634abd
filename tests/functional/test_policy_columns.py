"""The access policy's columns on ``resource`` (labels.policy_columns: labels as bits, source-agency
and owner-client tags) through HTTP, on SQLite and PostgreSQL: written with every version, kept in
step when an update changes the labels or tags, written by the batched importer too, and a row
written without them (by anything but the repository) withheld from every restricted caller."""
from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from fhir_server.auth.labels import policy_columns
from fhir_server.auth.service import AuthService
from fhir_server.repository.bulk import DeferredCreates
from fhir_server.repository.context import RequestContext
from fhir_server.storage.tables import resource
from tests.functional.test_access_policy import (R, SDV, auth, get, http, ids, obs, seeded, send,  # noqa: F401
                                                 token)
from tests.functional.test_auth import auth_app, auth_conn, auth_settings  # noqa: F401 - fixtures


def columns(app: Flask, res_type: str, res_id: str) -> tuple[int, str | None, str | None]:
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        row = uow.conn.execute(select(resource.c.sensitivity, resource.c.agencies, resource.c.owners).where(
            resource.c.res_type == res_type, resource.c.res_id == res_id)).one()
    return row.sensitivity, row.agencies, row.owners


def total(http: FlaskClient, query: str, tok: str) -> int:  # noqa: F811
    res = get(http, query, tok)
    assert res.status_code == 200, res.get_data(as_text=True)
    return int(res.get_json()["total"])


def test_every_version_writes_the_columns_and_an_update_keeps_them_in_step(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    assert columns(seeded, "Observation", "da-notice") == (1 | 64, "\tpolice/01\t", "")
    police = token(auth, "police", "police:01", scope="user/*.cruds", purpose="safeguarding")
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    before = total(http, "Observation?subject=Patient/child&_summary=count", care)
    assert get(http, "Observation/da-notice", care).status_code == 404

    # the police drop the labels: the row's bits follow, and the record is shared
    body = obs("da-notice", "police/01", "Domestic abuse incident (reviewed)")
    res = send(http, "PUT", "Observation/da-notice", body, police)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert columns(seeded, "Observation", "da-notice") == (0, "\tpolice/01\t", "")
    assert total(http, "Observation?subject=Patient/child&_summary=count", care) == before + 1
    assert get(http, "Observation/da-notice", care).status_code == 200
    assert "da-notice" in str(get(http, "Observation?subject=Patient/child", care).get_json())

    # and label it again: withheld again, from the read, the search and its total
    res = send(http, "PUT", "Observation/da-notice", obs("da-notice", "police/01", "Again", "Patient/child", SDV),
               police)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert columns(seeded, "Observation", "da-notice")[0] == 1
    assert total(http, "Observation?subject=Patient/child&_summary=count", care) == before
    assert get(http, "Observation/da-notice", care).status_code == 404
    assert "da-notice" not in str(get(http, "Observation?subject=Patient/child", care).get_json())


def test_a_deletion_and_a_subscription_owner_are_columns_too(http: FlaskClient, auth: AuthService,  # noqa: F811
                                                              seeded: Flask) -> None:
    la = token(auth, "social-worker", "la:201", scope="user/*.cruds", purpose="CAREMGT")
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "watch", "criteria": "Flag?patient=Patient/child",
           "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "payload": "application/fhir+json"}}
    res = send(http, "POST", "Subscription", sub, la)
    assert res.status_code == 201, res.get_data(as_text=True)
    sub_id = res.get_json()["id"]
    assert columns(seeded, "Subscription", sub_id) == (0, "\tlocal-authority/201\t", "\tsocial-worker-app\t")
    assert get(http, f"Subscription/{sub_id}", la).status_code == 200
    other = token(auth, "mash-practitioner", "la:201", purpose="CAREMGT")  # same agency, another client
    assert get(http, f"Subscription/{sub_id}", other).status_code == 404
    assert send(http, "DELETE", "Flag/cp-flag", None, la).status_code in (200, 204)
    # a deletion keeps the columns of the version it deleted (whose an owner-only resource was)
    assert columns(seeded, "Flag", "cp-flag") == (0, "\tlocal-authority/201\t", "")


def test_the_batched_importer_writes_the_columns(auth_app: Flask) -> None:  # noqa: F811
    services = auth_app.extensions["fhir"]
    ctx = RequestContext.system(services.settings.base_url)
    with services.repo.unit_of_work() as uow, DeferredCreates(uow, background=False) as writer:
        writer.create(ctx, obs("bulk-1", "health/RXX", "A&E attendance", "Patient/child", R), res_id="bulk-1")
        writer.create(ctx, obs("bulk-2", "education/201", "Attendance"), res_id="bulk-2")
    assert columns(auth_app, "Observation", "bulk-1") == (64, "\thealth/RXX\t", "")
    assert columns(auth_app, "Observation", "bulk-2") == (0, "\teducation/201\t", "")


def test_a_row_written_without_the_columns_is_withheld(http: FlaskClient, auth: AuthService,  # noqa: F811
                                                       seeded: Flask) -> None:
    """Fail closed: a row stored by SQL that bypassed the repository (the columns' defaults: every
    label bit, no known agency) is left out of every restricted caller's searches and totals until
    its columns are written (a read by id tests the JSON itself: Visibility.allows)."""
    content: dict[str, Any] = obs("raw", "local-authority/201", "Written by SQL")
    with seeded.extensions["fhir"].repo.unit_of_work() as uow:
        from fhir_server.fhir.instants import utcnow
        uow.conn.execute(insert(resource).values(res_type="Observation", res_id="raw", version_id=1,
                                                 last_updated=utcnow(), deleted=False, content=content))
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    police = token(auth, "police", "police:01", purpose="safeguarding")
    assert "raw" not in str(get(http, "Observation?_id=raw", care).get_json().get("entry", []))
    assert total(http, "Observation?_id=raw&_summary=count", police) == 0
    with seeded.extensions["fhir"].repo.unit_of_work() as uow:
        uow.conn.execute(update(resource).where(resource.c.res_id == "raw").values(**policy_columns(content)))
    assert "raw" in str(get(http, "Observation?_id=raw", care).get_json().get("entry", []))
    assert total(http, "Observation?_id=raw&_summary=count", police) == 1


def outcome(res: Any, target: str) -> tuple[int, list[tuple[str, str, str]]]:
    """The status and OperationOutcome issues of ``res`` with ``target`` (an id or version) written as ID."""
    body = res.get_json() or {}
    return res.status_code, [(i.get("severity", ""), i.get("code", ""), i.get("diagnostics", "").replace(target, "ID"))
                             for i in body.get("issue", [])]


def assert_deleted_as_unknown(http: FlaskClient, tok: str, ref: str, unknown: str, deletion: int) -> None:
    """DELETE of the deleted ``ref`` with If-Match at the deletion's version, the one before and the
    one after answers exactly what the same DELETE of the ``unknown`` reference does: a 412."""
    for version in (deletion, deletion - 1, deletion + 1):
        tag = {"If-Match": f'W/"{version}"'}
        theirs = send(http, "DELETE", ref, None, tok, **tag)
        never = send(http, "DELETE", unknown, None, tok, **tag)
        assert theirs.status_code == 412, (version, theirs.get_data(as_text=True))
        assert outcome(theirs, ref.split("/")[1]) == outcome(never, unknown.split("/")[1]), version


def client_token(auth: AuthService, client_id: str, role: str, agency: str, *,  # noqa: F811
                 scope: str = "user/*.cruds", purpose: str | None = "CAREMGT") -> str:
    return auth.mint_dev_token(client_id=client_id, scope=scope, practitioner="Practitioner/p1", agency=agency,
                               role=role, purpose=purpose)


WATCH = {"resourceType": "Subscription", "status": "requested", "reason": "watch", "criteria": "Flag?patient=Patient/child",
         "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "payload": "application/fhir+json",
                     "header": ["Authorization: Bearer portal-A-receiver"]}}


def test_a_client_id_differing_only_by_case_owns_nothing(http: FlaskClient, auth: AuthService,  # noqa: F811
                                                         seeded: Flask) -> None:
    """Client ids are compared exactly in SQL as in the JSON rule (policy._tagged): on SQLite a LIKE
    ignores ASCII case, so ``PORTAL-a`` was shown ``portal-A``'s Subscription (and its channel.header
    credentials) by search, _include, totals and $status."""
    owner = client_token(auth, "portal-A", "social-worker", "la:201")
    lookalike = client_token(auth, "PORTAL-a", "social-worker", "la:201")
    res = send(http, "POST", "Subscription", WATCH, owner)
    assert res.status_code == 201, res.get_data(as_text=True)
    sub_id = res.get_json()["id"]
    assert columns(seeded, "Subscription", sub_id)[2] == "\tportal-A\t"
    assert sub_id in str(get(http, "Subscription", owner).get_json())
    assert total(http, "Subscription?_summary=count", owner) == 1

    assert total(http, "Subscription?_summary=count", lookalike) == 0
    for query in ("Subscription", f"Subscription?_id={sub_id}", "Subscription?status=requested,active,off,error"):
        res = get(http, query, lookalike)
        assert res.status_code == 200 and ids(res.get_json()) == set(), query
        assert "portal-A-receiver" not in res.get_data(as_text=True), query
    assert get(http, f"Subscription/{sub_id}", lookalike).status_code == 404
    status = get(http, "Subscription/$status", lookalike)
    assert status.status_code == 200 and sub_id not in status.get_data(as_text=True)
    assert sub_id in get(http, "Subscription/$status", owner).get_data(as_text=True)
    # the lookalike's own Subscription is its own only
    res = send(http, "POST", "Subscription", WATCH, lookalike)
    assert res.status_code == 201, res.get_data(as_text=True)
    assert total(http, "Subscription?_summary=count", lookalike) == 1
    assert total(http, "Subscription?_summary=count", owner) == 1


def test_an_agency_code_differing_only_by_case_is_another_agency(http: FlaskClient, auth: AuthService,  # noqa: F811
                                                                  seeded: Flask) -> None:
    """Labels protect what is shared, not an agency's own records: the ``R`` A&E attendance of
    ``health/RXX`` is its own to ``health:RXX`` only, not to ``health:rxx`` (search, _revinclude and
    totals as the read by id already did)."""
    own = client_token(auth, "trust-app", "health-safeguarding", "health:RXX")
    lookalike = client_token(auth, "trust-app", "health-safeguarding", "health:rxx")
    query = "Observation?subject=Patient/child"
    assert "ed-visit" in str(get(http, query, own).get_json())
    assert get(http, "Observation/ed-visit", own).status_code == 200
    assert get(http, "Observation/ed-visit", lookalike).status_code == 404
    assert "ed-visit" not in str(get(http, query, lookalike).get_json())
    assert "ed-visit" not in str(get(http, "Patient?_id=child&_revinclude=Observation:subject", lookalike).get_json())
    assert total(http, f"{query}&_summary=count", lookalike) == total(http, f"{query}&_summary=count", own) - 1
    assert total(http, "Observation?_id=ed-visit&_summary=count", lookalike) == 0


def test_another_clients_deleted_subscription_is_deleted_as_an_unknown_id(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    """DELETE with If-Match of another client's deleted Subscription answers what an unknown id
    does (412 whatever the version): the version of the deletion confirmed its existence (204)."""
    owner = client_token(auth, "portal-A", "social-worker", "la:201")
    colleague = client_token(auth, "portal-B", "social-worker", "la:201")
    res = send(http, "POST", "Subscription", WATCH, owner)
    assert res.status_code == 201, res.get_data(as_text=True)
    sub_id = res.get_json()["id"]
    assert send(http, "DELETE", f"Subscription/{sub_id}", None, owner).status_code == 204
    deletion = columns_version(seeded, "Subscription", sub_id)
    unknown = "Subscription/00000000-0000-4000-8000-00000000beef"
    assert_deleted_as_unknown(http, colleague, f"Subscription/{sub_id}", unknown, deletion)
    assert send(http, "DELETE", f"Subscription/{sub_id}", None, colleague).status_code == 204  # as for an unknown id
    assert columns_version(seeded, "Subscription", sub_id) == deletion  # nothing written
    # its owner is still told the truth
    assert send(http, "DELETE", f"Subscription/{sub_id}", None, owner,
                **{"If-Match": f'W/"{deletion}"'}).status_code == 204
    assert send(http, "DELETE", f"Subscription/{sub_id}", None, owner,
                **{"If-Match": f'W/"{deletion - 1}"'}).status_code == 412


def columns_version(app: Flask, res_type: str, res_id: str) -> int:
    with app.extensions["fhir"].repo.unit_of_work(write=False) as uow:
        return int(uow.conn.execute(select(resource.c.version_id).where(
            resource.c.res_type == res_type, resource.c.res_id == res_id)).scalar_one())


def test_a_deletion_version_of_a_resource_now_hidden_reads_as_an_unknown_version(
        http: FlaskClient, auth: AuthService, seeded: Flask) -> None:  # noqa: F811
    """vread of a version that is a deletion answers 410 only to a caller who may see the resource
    now: once it is re-created with a label the caller is not cleared for, the deletion answers as
    a version of an unknown id does (404), as every other version of it does."""
    trust = client_token(auth, "trust-app", "health-safeguarding", "health:RXX")
    care = token(auth, "social-worker", "la:201", purpose="CAREMGT")
    assert send(http, "DELETE", "Observation/health-plain", None, trust).status_code in (200, 204)
    deletion = columns_version(seeded, "Observation", "health-plain")
    path = "Observation/{}/_history/" + str(deletion)
    assert get(http, path.format("health-plain"), care).status_code == 410  # deleted, and nothing hides it

    body = obs("health-plain", "health/RXX", "Weight (refuge address)", "Patient/child", R)
    res = send(http, "PUT", "Observation/health-plain", body, trust)
    assert res.status_code == 201, res.get_data(as_text=True)
    theirs = get(http, path.format("health-plain"), care)
    never = get(http, path.format("no-such-observation"), care)
    assert theirs.status_code == 404, theirs.get_data(as_text=True)
    assert outcome(theirs, "health-plain") == outcome(never, "no-such-observation")
    assert get(http, "Observation/health-plain/_history/1", care).status_code == 404
    # the agency whose record it is still reads it, and is told the deletion was one
    assert get(http, path.format("health-plain"), trust).status_code == 410
    assert get(http, "Observation/health-plain", trust).status_code == 200
