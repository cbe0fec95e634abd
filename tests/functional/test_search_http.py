"""Search through the HTTP API end to end: writes index in the same transaction, GET and POST
_search, paging links, includes, strict handling, whole-system search (search.html)."""
from __future__ import annotations

import simplejson

from .test_crud import FHIR_JSON, body, patient, post, put

NHS = "https://fhir.nhs.uk/Id/nhs-number"


def _child(family: str, given: str, nhs: str, born: str = "2014-06-01", **extra):
    return patient(name=[{"family": family, "given": [given]}], birthDate=born,
                   identifier=[{"system": NHS, "value": nhs}], **extra)


def _obs(subject: str, code: str, when: str, value: float | None = None):
    resource = {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "effectiveDateTime": when}
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org",
                                     "code": "kg"}
    return resource


def ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_search_sees_writes_and_updates_immediately(client):
    pid = body(post(client, _child("Brontë", "Émile", "9990000018")))["id"]
    assert ids(body(client.get("/fhir/Patient?name=bronte"))) == [pid]  # accent- and case-insensitive
    assert ids(body(client.get("/fhir/Patient?family:exact=Brontë"))) == [pid]
    assert ids(body(client.get(f"/fhir/Patient?identifier={NHS}|9990000018"))) == [pid]
    current = body(client.get(f"/fhir/Patient/{pid}"))
    put(client, dict(current, name=[{"family": "Shelley", "given": ["Mary"]}]))
    assert ids(body(client.get("/fhir/Patient?name=bronte"))) == []
    assert ids(body(client.get("/fhir/Patient?name=shel"))) == [pid]
    client.delete(f"/fhir/Patient/{pid}")
    assert body(client.get("/fhir/Patient?name=shel"))["total"] == 0


def test_typical_observation_search_with_sort_include_and_paging(client):
    pid = body(post(client, _child("Khan", "Aisha", "9990000026")))["id"]
    other = body(post(client, _child("Jones", "Tom", "9990000034")))["id"]
    for day in range(1, 8):
        post(client, _obs(f"Patient/{pid}", "29463-7", f"2025-03-0{day}", 20 + day))
    post(client, _obs(f"Patient/{pid}", "8302-2", "2025-03-04"))
    post(client, _obs(f"Patient/{other}", "29463-7", "2025-03-04"))
    first = body(client.get(f"/fhir/Observation?subject=Patient/{pid}&code=http://loinc.org|29463-7"
                            "&_sort=-date&_count=3&_include=Observation:subject"))
    assert first["total"] == 7
    dates = [e["resource"]["effectiveDateTime"] for e in first["entry"] if e["search"]["mode"] == "match"]
    assert dates == ["2025-03-07", "2025-03-06", "2025-03-05"]
    included = [e["resource"]["id"] for e in first["entry"] if e["search"]["mode"] == "include"]
    assert included == [pid]
    seen = list(dates)
    url = next(l["url"] for l in first["link"] if l["relation"] == "next")
    while url:
        page = body(client.get(url.replace("http://localhost", "")))
        seen += [e["resource"]["effectiveDateTime"] for e in page["entry"] if e["search"]["mode"] == "match"]
        url = next((l["url"] for l in page["link"] if l["relation"] == "next"), None)
    assert seen == [f"2025-03-0{d}" for d in range(7, 0, -1)]
    assert body(client.get("/fhir/Observation?value-quantity=gt25|http://unitsofmeasure.org|kg"))["total"] == 2
    assert body(client.get("/fhir/Observation?date=ge2025-03-06&subject=" + pid))["total"] == 2


def test_post_search_chain_and_reverse_chain(client):
    pid = body(post(client, _child("Nowak", "Zofia", "9990000042")))["id"]
    post(client, _obs(f"Patient/{pid}", "29463-7", "2025-01-01"))
    res = client.post("/fhir/Observation/_search", data="subject:Patient.name=nowak",
                      content_type="application/x-www-form-urlencoded")
    assert res.status_code == 200
    assert body(res)["total"] == 1
    has = body(client.get("/fhir/Patient?_has:Observation:subject:code=http://loinc.org|29463-7"))
    assert ids(has) == [pid]


def test_unknown_parameters_are_reported_or_refused_when_strict(client):
    lenient = body(client.get("/fhir/Patient?colour=blue"))
    outcome = [e for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcome and "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get("/fhir/Patient?colour=blue", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert body(strict)["resourceType"] == "OperationOutcome"


def test_hostile_values_are_just_values(client):
    post(client, _child("O'Brien", "Seán", "9990000050"))
    res = client.get("/fhir/Patient?name=' OR 1=1 --")
    assert res.status_code == 200 and body(res)["total"] == 0
    assert body(client.get("/fhir/Patient?name=o'brien"))["total"] == 1
    assert client.get("/fhir/Patient?birthdate=notadate").status_code == 400


def test_whole_system_search(client):
    pid = body(post(client, _child("Ahmed", "Yusuf", "9990000069")))["id"]
    oid = body(post(client, {"resourceType": "Organization", "name": "Northshire Children's Services"}))["id"]
    found = body(client.get(f"/fhir/?_id={pid},{oid}"))
    assert sorted(ids(found)) == sorted([pid, oid])
    only = body(client.get(f"/fhir/?_id={pid},{oid}&_type=Organization"))
    assert ids(only) == [oid]


def test_summary_count_and_elements(client):
    post(client, _child("Smith", "Ella", "9990000077"))
    count = body(client.get("/fhir/Patient?_summary=count"))
    assert count["total"] == 1 and "entry" not in count
    elements = body(client.get("/fhir/Patient?_elements=birthDate"))
    resource = elements["entry"][0]["resource"]
    assert "birthDate" in resource and "name" not in resource
    assert any(t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", []))


def test_search_parameter_values_with_bad_json_body_is_clear(client):
    res = client.post("/fhir/Patient/_search", data=simplejson.dumps({"name": "x"}), content_type=FHIR_JSON)
    assert res.status_code == 415


def test_patient_compartment_search(client):
    pid = body(post(client, _child("Mensah", "Kofi", "9990000085")))["id"]
    other = body(post(client, _child("Mensah", "Ama", "9990000093")))["id"]
    for day in range(1, 4):
        post(client, _obs(f"Patient/{pid}", "29463-7", f"2025-05-0{day}"))
    post(client, _obs(f"Patient/{other}", "29463-7", "2025-05-01"))
    post(client, {"resourceType": "Flag", "status": "active", "code": {"text": "CP plan"},
                  "subject": {"reference": f"Patient/{pid}"}})
    found = body(client.get(f"/fhir/Patient/{pid}/Observation?_count=2&_sort=date"))
    assert found["total"] == 3
    assert [e["resource"]["effectiveDateTime"] for e in found["entry"]] == ["2025-05-01", "2025-05-02"]
    nxt = next(l["url"] for l in found["link"] if l["relation"] == "next")
    assert f"/Patient/{pid}/Observation?" in nxt
    second = body(client.get(nxt.replace("http://localhost", "")))
    assert [e["resource"]["effectiveDateTime"] for e in second["entry"]] == ["2025-05-03"]
    everything = body(client.get(f"/fhir/Patient/{pid}/*"))
    # (each write's Provenance is in the compartment too: fhir_server/audit/provenance.py)
    assert sorted(e["resource"]["resourceType"] for e in everything["entry"]
                  if e["resource"]["resourceType"] != "Provenance") == \
        ["Flag", "Observation", "Observation", "Observation", "Patient"]
    assert body(client.get(f"/fhir/Patient/{pid}/Observation?date=2025-05-02"))["total"] == 1
    assert client.get("/fhir/Patient/nobody/Observation").status_code == 404
    assert client.get(f"/fhir/Patient/{pid}/Organization").status_code == 400
