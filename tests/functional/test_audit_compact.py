"""Reads and searches that write their own AuditEvent (audit/pending.py), with real commits: on
PostgreSQL the read's statement appends a compact row to ``audit_pending`` (no second round trip),
which the sealer expands into the full BALP AuditEvent and chains; an auditor's search of the trail
expands and seals first, so it sees every read at once. SQLite (the embedded default) keeps writing
the full AuditEvent straight into the trail."""
from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from fhir_server.audit import balp, seal_job
from fhir_server.fhir.instants import utcnow
from fhir_server.periodic import local_beat
from fhir_server.storage.tables import audit_event, audit_pending
from tests.functional.test_audit import child, entity_refs, observation, profile, search, verify


def rows(app: Flask, table: Any) -> list[Any]:
    with app.extensions["fhir"].engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.seq)))


def test_reads_and_searches_are_recorded_by_their_own_statement(committing_app: Flask) -> None:
    app, client = committing_app, committing_app.test_client()
    services = app.extensions["fhir"]
    local_beat.cancel(seal_job(services.engine))  # the test decides when the trail is sealed
    pid = child(client)
    oids = [observation(client, pid) for _ in range(3)]
    trail = len(rows(app, audit_event))
    assert client.get(f"/fhir/Observation/{oids[0]}").status_code == 200
    bundle = search(client, f"Observation?subject=Patient/{pid}&_sort=_id&_count=2")  # a next page exists
    page = [e["resource"]["id"] for e in bundle["entry"]]
    assert page == sorted(oids)[:2] and any(link["relation"] == "next" for link in bundle["link"])
    waiting = rows(app, audit_pending)
    if services.engine.dialect.name == "postgresql":
        assert len(rows(app, audit_event)) == trail  # nothing written to the trail by the requests
        assert [w.returned for w in waiting] == [[f"Observation/{oids[0]}/_history/1"],
                                                 [f"Observation/{i}/_history/1" for i in page]]
        assert waiting[0].head["subtype"][0]["code"] == "read"
        assert verify(client)["pending"] >= 2  # named as not yet covered
    else:
        assert waiting == []  # SQLite: the full AuditEvents went straight into the trail
        assert len(rows(app, audit_event)) == trail + 2

    # the auditor's question, asked at once: the search expands and seals first
    found = search(client, f"AuditEvent?patient=Patient/{pid}&_count=100")
    assert rows(app, audit_pending) == []
    by_code = {e["resource"]["subtype"][0]["code"]: e["resource"] for e in found["entry"]
               if e["resource"]["subtype"][0]["code"] in ("read", "search-type")}
    read, query = by_code["read"], by_code["search-type"]
    assert profile(read) == "PatientRead" and entity_refs(read, "1") == [f"Patient/{pid}"]
    assert entity_refs(read, "4") == [f"Observation/{oids[0]}/_history/1"]
    assert profile(query) == "PatientQuery" and entity_refs(query, "1") == [f"Patient/{pid}"]
    assert entity_refs(query, "4") == [f"Observation/{i}/_history/1" for i in page]  # the page only
    q = next(e for e in query["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(q["query"]).decode().startswith(f"Observation?subject=Patient%2F{pid}")
    assert all(any(x["url"] == balp.CHAIN_EXTENSION for x in e["extension"]) for e in (read, query))  # sealed
    result = verify(client)
    assert result["intact"] is True and result["pending"] == 1  # (the auditor's own search, recorded after)


def test_an_empty_search_and_a_missing_read_are_recorded_too(committing_app: Flask) -> None:
    app, client = committing_app, committing_app.test_client()
    local_beat.cancel(seal_job(app.extensions["fhir"].engine))
    assert search(client, "Observation?code=nothing-has-this")["total"] == 0
    assert client.get("/fhir/Observation/not-there").status_code == 404
    assert app.extensions["fhir"].audit.seal_pending() >= 2
    events = [r.content for r in rows(app, audit_event)]
    empty = next(e for e in events if e["subtype"][0]["code"] == "search-type")
    assert profile(empty) == "Query" and entity_refs(empty, "4") == []
    missing = next(e for e in events if e["subtype"][0]["code"] == "read")
    assert missing["outcome"] == "4" and entity_refs(missing, "4") == []  # the refusal, nothing disclosed
    assert not any(e["subtype"][0]["code"] == "read" and e["outcome"] == "0" for e in events)


@pytest.mark.parametrize("statement", ["UPDATE audit_pending SET returned = '[]'", "DELETE FROM audit_pending"])
def test_a_pending_event_cannot_be_changed_or_dropped_before_it_is_in_the_trail(committing_app: Flask,
                                                                                statement: str) -> None:
    app = committing_app
    services = app.extensions["fhir"]
    local_beat.cancel(seal_job(services.engine))
    pid = child(app.test_client())
    head = balp.audit_event(services.repo.settings and _ctx(services), [balp.Interaction(
        "read", "GET", f"Patient/{pid}", 200, res_type="Patient", res_id=pid, patients=[f"Patient/{pid}"])], utcnow())
    with services.engine.begin() as conn:
        conn.execute(insert(audit_pending), [{"event_id": head["id"], "recorded": utcnow(), "head": head,
                                              "returned": [f"Patient/{pid}/_history/1"]}])
    with pytest.raises(DBAPIError, match="append-only"):
        with services.engine.begin() as conn:
            conn.execute(text(statement))
    assert len(rows(app, audit_pending)) == 1
    services.audit.seal_pending()  # expanded into the trail, then (only then) removed
    assert rows(app, audit_pending) == []
    sealed = [r for r in rows(app, audit_event) if r.event_id == head["id"]]
    assert len(sealed) == 1 and sealed[0].chain_pos is not None
    assert entity_refs(sealed[0].content, "1") == [f"Patient/{pid}"]
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_event)
                            .where(audit_event.c.event_id == head["id"])).scalar_one() == 1


def _ctx(services: Any) -> Any:
    from fhir_server.repository.context import RequestContext

    return RequestContext(services.settings.base_url)
