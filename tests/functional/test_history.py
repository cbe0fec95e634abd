"""Instance, type and system history with _since, _count and paging (http.html#history)."""
from __future__ import annotations

import simplejson

from .test_crud import body, patient, post, put


def test_type_and_system_history_with_paging(client):
    ids = [body(post(client, patient(birthDate=f"201{i}-01-01")))["id"] for i in range(5)]
    put(client, dict(body(client.get(f"/fhir/Patient/{ids[0]}")), gender="male"))
    post(client, {"resourceType": "Organization", "name": "Northshire Police"})
    type_history = body(client.get("/fhir/Patient/_history?_count=2"))
    assert type_history["type"] == "history"
    assert type_history["total"] == 6
    assert len(type_history["entry"]) == 2
    assert type_history["entry"][0]["resource"]["id"] == ids[0]  # the newest version first
    assert type_history["entry"][0]["request"] == {"method": "PUT", "url": f"Patient/{ids[0]}"}
    seen = []
    url = next(l["url"] for l in type_history["link"] if l["relation"] == "self")
    while url:
        page = body(client.get(url.replace("http://localhost", "")))
        seen += [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in page["entry"]]
        post(client, patient())  # writes while paging must not shift pages
        url = next((l["url"] for l in page["link"] if l["relation"] == "next"), None)
    assert len(seen) == 6 and len(set(seen)) == 6
    system = body(client.get("/fhir/_history"))
    # every write also wrote its Provenance (fhir_server/audit/provenance.py)
    assert {e["resource"]["resourceType"] for e in system["entry"]} - {"Provenance"} == {"Patient", "Organization"}


def test_history_since(client):
    first = post(client, patient())
    pid = body(first)["id"]
    cut = body(first)["meta"]["lastUpdated"]
    put(client, dict(body(first), gender="male"))
    recent = body(client.get(f"/fhir/Patient/{pid}/_history", query_string={"_since": cut}))
    assert [e["resource"]["meta"]["versionId"] for e in recent["entry"]] == ["2", "1"]
    later = body(client.get(f"/fhir/Patient/{pid}/_history",
                            query_string={"_since": "2999-01-01T00:00:00Z"}))
    assert later["total"] == 0


def test_history_of_unknown_resource_is_404(client):
    assert client.get("/fhir/Patient/nope/_history").status_code == 404


def test_history_rejects_bad_since(client):
    res = client.get("/fhir/Patient/_history?_since=yesterday")
    assert res.status_code == 400
    assert simplejson.loads(res.data)["issue"][0]["expression"] == ["_since"]
