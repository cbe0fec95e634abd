"""A read's or search's compact AuditEvent (audit/pending.py), expanded by the sealer, is the same
BALP AuditEvent the recorder builds when told of the answer (balp.with_disclosed vs balp.audit_event)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fhir_server.audit import balp
from fhir_server.repository.context import RequestContext

NOW = datetime(2026, 11, 25, 23, 40)
CTX = RequestContext("http://fhir.test/fhir", client_id="mash-app", practitioner="Practitioner/p1", agency="la:201",
                     purpose_of_use="CAREMGT", request_id="req-1")


def obs(oid: str, pid: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": oid, "meta": {"versionId": "2"}}
    if pid:
        body["subject"] = {"reference": f"Patient/{pid}"}
    return body


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": "1"}}


@pytest.mark.parametrize(("item", "returned"), [
    (balp.Interaction("read", "GET", "Observation/o1", 200, res_type="Observation", res_id="o1"), [obs("o1", "c1")]),
    (balp.Interaction("read", "GET", "Observation/o2", 200, res_type="Observation", res_id="o2"), [obs("o2", None)]),
    (balp.Interaction("read", "GET", "Patient/c1", 200, res_type="Patient", res_id="c1", patients=["Patient/c1"]),
     [patient("c1")]),
    (balp.Interaction("search-type", "GET", "Observation", 200, res_type="Observation",
                      query="Observation?subject=Patient%2Fc1"), [obs("o1", "c1"), obs("o3", "c2"), obs("o4", "c1")]),
    (balp.Interaction("search-type", "GET", "Patient", 200, res_type="Patient", query="Patient?name=x"),
     [patient("c1"), patient("c2")]),
    (balp.Interaction("search-type", "GET", "Observation", 200, res_type="Observation", query="Observation?code=x"),
     []),
])
def test_an_expanded_compact_event_is_the_event_of_the_answer(item: balp.Interaction,
                                                              returned: list[dict[str, Any]]) -> None:
    head = balp.audit_event(CTX, [item], NOW, event_id="e1")
    refs = [balp.reference_of(r) for r in returned]
    told = balp.Interaction(item.code, item.method, item.path, 200, res_type=item.res_type, res_id=item.res_id,
                            query=item.query, returned=[r for r in refs if r],
                            patients=list(dict.fromkeys([*item.patients,
                                                         *(p for r in returned for p in balp.patients_in(r))])))
    expected = balp.audit_event(CTX, [told], NOW, event_id="e1")
    assert balp.with_disclosed(head, list(zip(refs, returned))) == expected  # type: ignore[arg-type]


def test_a_version_no_longer_found_is_still_listed() -> None:
    """(The sealer reads each version disclosed from resource_history; a version it cannot find
    still appears as disclosed, only without the patients it would name.)"""
    item = balp.Interaction("read", "GET", "Observation/o1", 200, res_type="Observation", res_id="o1")
    event = balp.with_disclosed(balp.audit_event(CTX, [item], NOW), [("Observation/o1/_history/3", None)])
    assert [e["what"].get("reference") for e in event["entity"] if "reference" in e["what"]] == \
        ["Observation/o1/_history/3"]
    assert event["meta"]["profile"][0].endswith(".Read")


def test_settle_runs_again_only_when_the_consents_changed() -> None:
    """pending.Stamp.settle: ``audited`` 0 with a row to disclose is stale Consents only when the
    statement's ``policy_ok`` says so; otherwise the SQL access rule refused it and the recorder
    writes the full event (Stamp.returned stays None)."""
    from fhir_server.audit.pending import Stamp
    from fhir_server.errors import RunAgain

    dropped: list[int | None] = []
    refused = Stamp({"id": "e1"}, NOW, consent_version=7, invalidate=dropped.append)
    refused.settle(0, ["Observation/o1/_history/1"], policy_ok=True)
    assert refused.returned is None and dropped == []
    stale = Stamp({"id": "e2"}, NOW, consent_version=7, invalidate=dropped.append)
    with pytest.raises(RunAgain):
        stale.settle(0, ["Observation/o1/_history/1"], policy_ok=False)
    assert stale.returned is None and dropped == [7]
    written = Stamp({"id": "e3"}, NOW, consent_version=7, invalidate=dropped.append)
    written.settle(1, ["Observation/o1/_history/1"], policy_ok=True)
    assert written.returned == ["Observation/o1/_history/1"]
