"""Batch and transaction Bundles (http.html#transaction), through HTTP on SQLite and PostgreSQL,
plus the pure reference-rewriting rules they rely on (http.html#trules)."""
from __future__ import annotations

import base64
import uuid

import pytest
import simplejson

from fhir_server import create_app
from fhir_server.errors import BadRequest
from fhir_server.rest.references import conditional_reference, rewrite_references

FHIR_JSON = "application/fhir+json"
SYSTEM = "http://example.org/fhir/sid/child-id"


def body(response):
    return simplejson.loads(response.data, use_decimal=True)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def patient(identifier: str | None = None, **extra):
    resource = {"resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Amara"]}],
                "gender": "female", "birthDate": "2015-03-09"}
    if identifier:
        resource["identifier"] = [{"system": SYSTEM, "value": identifier}]
    resource.update(extra)
    return resource


def observation(subject: str, **extra):
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                "subject": {"reference": subject}, "valueQuantity": {"value": 12.5, "unit": "kg"}}
    resource.update(extra)
    return resource


def entry(method: str, url: str, resource=None, full_url: str | None = None, **request):
    out: dict = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url:
        out["fullUrl"] = full_url
    return out


def bundle(kind: str, *entries):
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_bundle(client, sent, **headers):
    return client.post("/fhir", data=simplejson.dumps(sent), content_type=FHIR_JSON, headers=headers)


def create(client, resource):
    res = client.post(f"/fhir/{resource['resourceType']}", data=simplejson.dumps(resource), content_type=FHIR_JSON)
    assert res.status_code == 201, res.data
    return body(res)


def search_ids(client, query: str) -> list[str]:
    res = client.get(f"/fhir/{query}")
    assert res.status_code == 200, res.data
    return [e["resource"]["id"] for e in body(res).get("entry", []) if e.get("search", {}).get("mode") == "match"]


def location_id(entry_response: dict) -> tuple[str, str]:
    parts = entry_response["response"]["location"].split("/fhir/", 1)[-1].split("/")
    return parts[0], parts[1]


# -- pure: reference rewriting -----------------------------------------------------------------


def test_rewrite_replaces_every_link_to_a_full_url_including_contained_and_extensions():
    a, b = urn(), urn()
    resource = {
        "resourceType": "Observation", "id": a,
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{a}">x</a></div>'},
        "meta": {"profile": [a]},
        "subject": {"reference": a},
        "performer": [{"reference": b}, {"reference": "Practitioner/7"}, {"reference": "#c1"}],
        "contained": [{"resourceType": "Provenance", "id": "c1", "target": [{"reference": b}]}],
        "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": a}},
                      {"url": "http://example.org/src", "valueUri": b}],
    }
    changed = rewrite_references(resource, {a: "Patient/1", b: "Practitioner/2"}, where="Bundle.entry[0].resource")
    assert changed == 6
    assert resource["subject"] == {"reference": "Patient/1"}
    assert [p["reference"] for p in resource["performer"]] == ["Practitioner/2", "Practitioner/7", "#c1"]
    assert resource["contained"][0]["target"][0]["reference"] == "Practitioner/2"
    assert resource["extension"][0]["valueReference"]["reference"] == "Patient/1"
    assert resource["extension"][1]["valueUri"] == "Practitioner/2"
    assert 'href="Patient/1"' in resource["text"]["div"]
    # ids are never links and canonicals are not replaced (http.html#trules)
    assert resource["id"] == a and resource["meta"]["profile"] == [a]


def test_rewrite_rejects_a_placeholder_that_is_not_in_the_bundle_and_names_the_element():
    resource = {"resourceType": "Observation", "hasMember": [{"reference": "Patient/1"}, {"reference": urn()}]}
    with pytest.raises(BadRequest) as caught:
        rewrite_references(resource, {}, where="Bundle.entry[4].resource", reject_unresolved=True)
    assert caught.value.issues[0].expression == ("Bundle.entry[4].resource.hasMember[1].reference",)


def test_rewrite_hands_conditional_references_to_the_resolver():
    seen = []

    def resolve(value: str, where: str) -> str:
        seen.append((value, where))
        return "Patient/42"

    resource = {"resourceType": "Observation", "subject": {"reference": f"Patient?identifier={SYSTEM}|A1"}}
    rewrite_references(resource, {}, where="R", conditional=resolve)
    assert resource["subject"]["reference"] == "Patient/42"
    assert seen == [(f"Patient?identifier={SYSTEM}|A1", "R.subject.reference")]
    assert conditional_reference("Patient?identifier=a|b") == ("Patient", "identifier=a|b")
    assert conditional_reference("Patient/1") is None
    assert conditional_reference("http://x.org/Patient?x=1") is None


# -- transaction -------------------------------------------------------------------------------


def test_transaction_resolves_urn_uuid_references_everywhere(client):
    p, o = urn(), urn()
    contained_obs = observation(p, contained=[{"resourceType": "Provenance", "id": "prov",
                                               "target": [{"reference": p}], "recorded": "2024-01-01T00:00:00Z",
                                               "agent": [{"who": {"reference": p}}]}],
                                extension=[{"url": "http://example.org/about", "valueReference": {"reference": p}}],
                                hasMember=[{"reference": o}])
    sent = bundle("transaction",
                  entry("POST", "Observation", contained_obs),
                  entry("POST", "Patient", patient("T-1"), p),
                  entry("POST", "Observation", observation(p), o))
    res = post_bundle(client, sent)
    assert res.status_code == 200, res.data
    answer = body(res)
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 3
    for e in answer["entry"]:
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["lastModified"]
        assert e["response"]["location"].endswith("/_history/1")
        assert e["fullUrl"].endswith(f"/{e['resource']['resourceType']}/{e['resource']['id']}")
    pid = answer["entry"][1]["resource"]["id"]
    oid = answer["entry"][2]["resource"]["id"]
    stored = body(client.get(f"/fhir/Observation/{answer['entry'][0]['resource']['id']}"))
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert stored["contained"][0]["target"][0]["reference"] == f"Patient/{pid}"
    assert stored["contained"][0]["agent"][0]["who"]["reference"] == f"Patient/{pid}"
    assert stored["extension"][0]["valueReference"]["reference"] == f"Patient/{pid}"
    assert stored["hasMember"][0]["reference"] == f"Observation/{oid}"
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    # the index rows were written too: search by reference finds both observations
    assert len(search_ids(client, f"Observation?subject=Patient/{pid}")) == 2
    history = body(client.get(f"/fhir/Patient/{pid}/_history"))
    assert history["total"] == 1 and history["entry"][0]["request"]["method"] == "POST"


def test_transaction_is_atomic(client):
    sent = bundle("transaction",
                  entry("POST", "Patient", patient("ATOMIC-1"), urn()),
                  entry("POST", "Observation", {"resourceType": "Observation", "status": "final",
                                                "code": {"text": "x"}, "notAnElement": True}))
    res = post_bundle(client, sent)
    assert res.status_code == 422, res.data
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0] == "Bundle.entry[1]"
    assert "Bundle.entry[1].resource.notAnElement" in outcome["issue"][0]["expression"]
    assert search_ids(client, f"Patient?identifier={SYSTEM}|ATOMIC-1") == []


def test_transaction_failing_after_a_batch_of_creates_was_written_rolls_back_all(client):
    """More entries than one write batch (repository/bulk.py): the first batch is already written
    (on PostgreSQL by a background thread) when entry 600 fails."""
    entries = [entry("POST", "Patient", patient(f"ATOMIC-BATCH-{i}")) for i in range(600)]
    entries.append(entry("POST", "Patient", patient(gender="not-a-gender-code")))
    entries.append(entry("POST", "Patient", {"resourceType": "Patient", "unknownElement": 1}))
    res = post_bundle(client, bundle("transaction", *entries), Prefer="return=minimal")
    assert res.status_code in (400, 422), res.data
    assert body(res)["issue"][0]["expression"][0] in ("Bundle.entry[600]", "Bundle.entry[601]")
    assert search_ids(client, f"Patient?identifier={SYSTEM}|ATOMIC-BATCH-0") == []
    assert search_ids(client, f"Patient?identifier={SYSTEM}|ATOMIC-BATCH-599") == []


def test_a_failed_batched_write_surfaces_and_rolls_back(app):
    """A write error of the queue (here: two creates with one id) is raised to the caller, and the
    unit of work then rolls back as usual."""
    from sqlalchemy.exc import IntegrityError

    from fhir_server.repository.bulk import DeferredCreates
    from fhir_server.repository.context import RequestContext

    repo = app.extensions["fhir"].repo
    ctx = RequestContext.system("http://localhost/fhir")
    with pytest.raises(IntegrityError):
        with repo.unit_of_work() as uow, DeferredCreates(uow, batch_size=2) as deferred:
            deferred.create(ctx, patient("DUP-1"), res_id="dup")
            deferred.create(ctx, patient("DUP-2"), res_id="dup")  # queue full: written (maybe in background)
            deferred.create(ctx, patient("DUP-3"))
            deferred.flush()
    with repo.unit_of_work(write=False) as uow:
        assert uow.find("Patient", [("identifier", f"{SYSTEM}|DUP-3")]) == []
        assert not uow.exists("Patient", "dup")


def test_transaction_failing_precondition_rolls_back_earlier_writes(client):
    existing = create(client, patient("ATOMIC-2"))
    stale = create(client, patient("ATOMIC-4"))
    sent = bundle("transaction",
                  entry("DELETE", f"Patient/{existing['id']}"),
                  entry("POST", "Patient", patient("ATOMIC-3")),
                  entry("PUT", "Patient/atomic-new", patient(id="atomic-new")),
                  entry("PUT", f"Patient/{stale['id']}", dict(stale, gender="male"), ifMatch='W/"4"'))
    res = post_bundle(client, sent)
    assert res.status_code == 412
    assert body(res)["issue"][0]["expression"] == ["Bundle.entry[3]", "Bundle.entry[3].request.ifMatch"]
    assert client.get(f"/fhir/Patient/{existing['id']}").status_code == 200
    assert search_ids(client, f"Patient?identifier={SYSTEM}|ATOMIC-3") == []
    assert client.get("/fhir/Patient/atomic-new").status_code == 404
    assert body(client.get(f"/fhir/Patient/{stale['id']}"))["meta"]["versionId"] == "1"


def test_transaction_processes_delete_post_put_get_in_that_order(client):
    old = create(client, patient("ORDER-1"))
    sent = bundle("transaction",
                  # GET runs last: it sees the PUT below
                  entry("GET", f"Patient?identifier={SYSTEM}|ORDER-2"),
                  # PUT runs after POST
                  entry("PUT", "Patient/order-put", patient("ORDER-2", id="order-put")),
                  # POST runs after DELETE: the only match of If-None-Exist is gone by then
                  entry("POST", "Patient", patient("ORDER-1", gender="male"), urn(),
                        ifNoneExist=f"identifier={SYSTEM}|ORDER-1"),
                  entry("DELETE", f"Patient/{old['id']}"))
    res = post_bundle(client, sent)
    assert res.status_code == 200, res.data
    out = body(res)["entry"]
    assert [e["response"]["status"] for e in out] == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    searchset = out[0]["resource"]
    assert searchset["type"] == "searchset"
    assert [e["resource"]["id"] for e in searchset["entry"] if e["search"]["mode"] == "match"] == ["order-put"]
    assert out[2]["resource"]["id"] != old["id"]
    assert client.get(f"/fhir/Patient/{old['id']}").status_code == 410


def test_conditional_create_in_a_transaction_maps_the_full_url_to_the_match(client):
    existing = create(client, patient("COND-1"))
    p = urn()
    sent = bundle("transaction",
                  entry("POST", "Patient", patient("COND-1"), p, ifNoneExist=f"identifier={SYSTEM}|COND-1"),
                  entry("POST", "Observation", observation(p)),
                  entry("POST", "Patient", patient("COND-NEW"), None, ifNoneExist=f"identifier={SYSTEM}|COND-NEW"))
    res = post_bundle(client, sent)
    assert res.status_code == 200, res.data
    out = body(res)["entry"]
    assert [e["response"]["status"] for e in out] == ["200 OK", "201 Created", "201 Created"]
    assert out[0]["resource"]["id"] == existing["id"]
    assert out[1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert len(search_ids(client, f"Patient?identifier={SYSTEM}|COND-1")) == 1
    assert len(search_ids(client, f"Patient?identifier={SYSTEM}|COND-NEW")) == 1


def test_conditional_update_in_a_transaction_maps_the_full_url_to_its_target(client):
    existing = create(client, patient("CUPD-1"))
    known, new = urn(), urn()
    sent = bundle("transaction",
                  entry("PUT", f"Patient?identifier={SYSTEM}|CUPD-1", patient("CUPD-1", gender="male"), known),
                  entry("PUT", f"Patient?identifier={SYSTEM}|CUPD-2", patient("CUPD-2"), new),
                  entry("POST", "Observation", observation(known, focus=[{"reference": new}])),
                  # an absolute request.url on this server's base is the same as a relative one
                  entry("GET", f"http://localhost/fhir/Patient?identifier={SYSTEM}|CUPD-2"))
    res = post_bundle(client, sent)
    assert res.status_code == 200, res.data
    out = body(res)["entry"]
    assert [e["response"]["status"] for e in out] == ["200 OK", "201 Created", "201 Created", "200 OK"]
    assert out[0]["resource"]["id"] == existing["id"] and out[0]["resource"]["gender"] == "male"
    created_id = out[1]["resource"]["id"]
    assert out[2]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    # every link to a fullUrl is rewritten, not only the subject
    assert out[2]["resource"]["focus"][0]["reference"] == f"Patient/{created_id}"
    assert [e["resource"]["id"] for e in out[3]["resource"]["entry"]] == [created_id]
    elsewhere = post_bundle(client, bundle("transaction", entry("GET", "http://elsewhere.example/fhir/Patient")))
    assert elsewhere.status_code == 400
    assert body(elsewhere)["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]


def test_conditional_references_are_resolved_by_search(client):
    existing = create(client, patient("CREF-1"))
    create(client, patient("CREF-TWICE"))
    create(client, patient("CREF-TWICE"))
    ok = post_bundle(client, bundle("transaction",
                                    entry("POST", "Observation", observation(f"Patient?identifier={SYSTEM}|CREF-1"))))
    assert ok.status_code == 200, ok.data
    assert body(ok)["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"

    none = post_bundle(client, bundle("transaction",
                                      entry("POST", "Observation", observation(f"Patient?identifier={SYSTEM}|NOPE"))))
    assert none.status_code == 400
    assert body(none)["issue"][0]["expression"][-1] == "Bundle.entry[0].resource.subject.reference"
    several = post_bundle(client, bundle("transaction", entry(
        "POST", "Observation", observation(f"Patient?identifier={SYSTEM}|CREF-TWICE"))))
    assert several.status_code == 412


def test_unresolvable_placeholder_duplicate_full_url_and_overlapping_writes_are_400(client):
    dangling = post_bundle(client, bundle("transaction", entry("POST", "Observation", observation(urn()))))
    assert dangling.status_code == 400
    same = urn()
    twice = post_bundle(client, bundle("transaction", entry("POST", "Patient", patient(), same),
                                       entry("POST", "Patient", patient(), same)))
    assert twice.status_code == 400
    assert "Bundle.entry[1].fullUrl" in body(twice)["issue"][0]["expression"]
    overlap = post_bundle(client, bundle("transaction",
                                         entry("PUT", "Patient/overlap", patient(id="overlap")),
                                         entry("DELETE", "Patient/overlap")))
    assert overlap.status_code == 400
    assert client.get("/fhir/Patient/overlap").status_code == 404


def test_transaction_with_get_patch_delete_and_prefer(client):
    target = create(client, patient("MIXED-1"))
    gone = create(client, patient("MIXED-2"))
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(simplejson.dumps(patch).encode()).decode()}
    sent = bundle("transaction",
                  entry("GET", f"Patient/{target['id']}"),
                  entry("PATCH", f"Patient/{target['id']}", binary),
                  entry("DELETE", f"Patient?identifier={SYSTEM}|MIXED-2"),
                  entry("HEAD", f"Patient/{target['id']}"))
    res = post_bundle(client, sent, Prefer="return=OperationOutcome")
    assert res.status_code == 200, res.data
    out = body(res)["entry"]
    assert out[0]["response"]["status"] == "200 OK"
    assert out[0]["resource"]["gender"] == "other"  # GETs run after PATCH
    assert out[0]["response"]["etag"] == 'W/"2"'
    assert out[1]["response"]["status"] == "200 OK"
    assert out[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert "resource" not in out[1]
    assert out[2]["response"]["status"] in ("200 OK", "204 No Content")
    assert out[3] == {"response": {"status": "200 OK", "etag": 'W/"2"',
                                   "lastModified": out[0]["response"]["lastModified"]}}
    assert client.get(f"/fhir/Patient/{gone['id']}").status_code == 410

    minimal = post_bundle(client, bundle("transaction", entry("POST", "Patient", patient())), Prefer="return=minimal")
    assert minimal.status_code == 200
    only = body(minimal)["entry"][0]
    assert "resource" not in only and only["response"]["status"] == "201 Created"


def test_transaction_of_a_thousand_entries(client):
    entries = []
    for i in range(500):
        p = urn()
        entries.append(entry("POST", "Patient", patient(f"BIG-{i}"), p))
        entries.append(entry("POST", "Observation", observation(p, code={"text": f"big-{i}"})))
    res = post_bundle(client, bundle("transaction", *entries), Prefer="return=minimal")
    assert res.status_code == 200, res.data[:2000]
    out = body(res)["entry"]
    assert len(out) == 1000
    assert all(e["response"]["status"] == "201 Created" for e in out)
    patient_id = location_id(out[998])[1]
    obs_type, obs_id = location_id(out[999])
    assert obs_type == "Observation"
    stored = body(client.get(f"/fhir/Observation/{obs_id}"))
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert body(client.get(f"/fhir/Patient/{patient_id}"))["identifier"][0]["value"] == "BIG-499"
    assert search_ids(client, f"Observation?subject=Patient/{patient_id}") == [obs_id]
    counted = body(client.get(f"/fhir/Patient?identifier={SYSTEM}|BIG-250&_summary=count"))
    assert counted["total"] == 1
    assert client.get(f"/fhir/Observation/{obs_id}/_history/1").status_code == 200


# -- batch -------------------------------------------------------------------------------------


def test_batch_entries_succeed_or_fail_independently(client):
    sent = bundle("batch",
                  entry("POST", "Patient", patient("BATCH-1")),
                  entry("POST", "Observation", {"resourceType": "Observation", "status": "final",
                                                "code": {"text": "x"}, "bogus": 1}),
                  entry("GET", "Patient/does-not-exist"),
                  {"fullUrl": "no request"},
                  entry("POST", "Patient", patient("BATCH-2")))
    res = post_bundle(client, sent)
    assert res.status_code == 200, res.data
    answer = body(res)
    assert answer["type"] == "batch-response"
    out = answer["entry"]
    assert out[0]["response"]["status"] == "201 Created"
    assert out[1]["response"]["status"].startswith(("400", "422"))
    assert out[1]["response"]["outcome"]["issue"][0]["expression"][0] == "Bundle.entry[1]"
    assert out[2]["response"]["status"] == "404 Not Found"
    assert out[3]["response"]["status"] == "400 Bad Request"
    assert out[4]["response"]["status"] == "201 Created"
    assert len(search_ids(client, f"Patient?identifier={SYSTEM}|BATCH-1")) == 1
    assert len(search_ids(client, f"Patient?identifier={SYSTEM}|BATCH-2")) == 1


def test_if_match_in_a_batch_entry_is_a_412_entry(client):
    created = create(client, patient("BATCH-IFMATCH"))
    changed = dict(created, gender="male")
    sent = bundle("batch",
                  entry("PUT", f"Patient/{created['id']}", changed, ifMatch='W/"7"'),
                  entry("GET", f"Patient/{created['id']}", ifNoneMatch='W/"1"'),
                  entry("GET", f"Patient?identifier={SYSTEM}|BATCH-IFMATCH"))
    res = post_bundle(client, sent)
    assert res.status_code == 200
    out = body(res)["entry"]
    assert out[0]["response"]["status"] == "412 Precondition Failed"
    assert out[0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out[1]["response"]["status"] == "304 Not Modified"
    assert out[2]["resource"]["type"] == "searchset"
    assert body(client.get(f"/fhir/Patient/{created['id']}"))["gender"] == "female"


def test_batch_does_not_resolve_references_between_entries(client):
    p = urn()
    sent = bundle("batch", entry("POST", "Patient", patient(), p), entry("POST", "Observation", observation(p)))
    out = body(post_bundle(client, sent))["entry"]
    assert out[1]["resource"]["subject"]["reference"] == p


# -- the envelope --------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [
    {"resourceType": "Bundle", "type": "collection", "entry": []},
    {"resourceType": "Bundle", "type": "searchset"},
    {"resourceType": "Bundle"},
    {"resourceType": "Patient"},
    {"resourceType": "Bundle", "type": "batch", "entry": {"not": "a list"}},
    {"resourceType": "Bundle", "type": "transaction", "timestamp": "not a date"},
])
def test_anything_but_a_batch_or_transaction_bundle_is_400(client, sent):
    res = post_bundle(client, sent)
    assert res.status_code == 400, res.data
    assert body(res)["resourceType"] == "OperationOutcome"


def test_transaction_entry_without_a_valid_request_is_400(client):
    res = post_bundle(client, bundle("transaction", entry("POST", "Patient", patient()),
                                     {"request": {"method": "FETCH", "url": "Patient"}}))
    assert res.status_code == 400
    assert body(res)["issue"][0]["expression"] == ["Bundle.entry[1].request.method"]


def test_empty_transaction_answers_an_empty_response(client):
    res = post_bundle(client, {"resourceType": "Bundle", "type": "transaction"})
    assert res.status_code == 200
    assert "entry" not in body(res)


@pytest.fixture
def small_client(engine, settings):
    """The app of conftest's ``app`` fixture, with at most 3 entries per Bundle."""
    conn = engine.connect()
    outer = conn.begin()
    application = create_app(settings.with_overrides(max_bundle_entries=3), connection=conn)
    yield application.test_client()
    outer.rollback()
    conn.close()


def test_oversized_bundle_is_413(small_client):
    entries = [entry("POST", "Patient", patient()) for _ in range(4)]
    for kind in ("batch", "transaction"):
        res = post_bundle(small_client, bundle(kind, *entries))
        assert res.status_code == 413
        assert body(res)["issue"][0]["code"] == "too-costly"
    assert post_bundle(small_client, bundle("batch", *entries[:3])).status_code == 200


@pytest.mark.slow
def test_transaction_of_ten_thousand_entries(client, database_url):
    """The size limit the server is built for (settings.max_bundle_entries is 20,000)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("one large run is enough: PostgreSQL, where production data lives")
    entries = []
    for i in range(5000):
        p = urn()
        entries.append(entry("POST", "Patient", patient(f"HUGE-{i}"), p))
        entries.append(entry("POST", "Observation", observation(p)))
    res = post_bundle(client, bundle("transaction", *entries), Prefer="return=minimal")
    assert res.status_code == 200, res.data[:2000]
    out = body(res)["entry"]
    assert len(out) == 10_000 and all(e["response"]["status"] == "201 Created" for e in out)
    patient_id = location_id(out[9998])[1]
    assert search_ids(client, f"Observation?subject=Patient/{patient_id}") == [location_id(out[9999])[1]]
