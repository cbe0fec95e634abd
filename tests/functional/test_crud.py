"""create, read, vread, update, patch, delete and their conditional forms, through HTTP
(http.html), on SQLite and PostgreSQL."""
from __future__ import annotations

import simplejson

FHIR_JSON = "application/fhir+json"


def body(response):
    return simplejson.loads(response.data, use_decimal=True)


def patient(**extra):
    resource = {"resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Amara"]}],
                "gender": "female", "birthDate": "2015-03-09"}
    resource.update(extra)
    return resource


def post(client, resource, **headers):
    return client.post(f"/fhir/{resource['resourceType']}", data=simplejson.dumps(resource),
                       content_type=FHIR_JSON, headers=headers)


def put(client, resource, **headers):
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=simplejson.dumps(resource),
                      content_type=FHIR_JSON, headers=headers)


def test_create_assigns_id_and_meta_and_reads_back_equal(client):
    sent = patient(id="client-chosen-is-ignored")
    res = post(client, sent)
    assert res.status_code == 201
    created = body(res)
    assert created["id"] != "client-chosen-is-ignored"
    assert created["meta"]["versionId"] == "1"
    assert res.headers["ETag"] == 'W/"1"'
    assert res.headers["Location"].endswith(f"/fhir/Patient/{created['id']}/_history/1")
    assert "Last-Modified" in res.headers
    read = client.get(f"/fhir/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.headers["Content-Type"].startswith(FHIR_JSON)
    got = body(read)
    for key in ("name", "gender", "birthDate"):
        assert got[key] == sent[key]


def test_decimals_and_fractional_seconds_round_trip_exactly(client):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
           "effectiveDateTime": "2024-01-02T10:11:12.1+01:00",
           "valueQuantity": {"value": 1.50, "unit": "kg"}}
    raw = '{"resourceType":"Observation","status":"final","code":{"text":"weight"},' \
          '"effectiveDateTime":"2024-01-02T10:11:12.1+01:00","valueQuantity":{"value":1.50,"unit":"kg"}}'
    res = client.post("/fhir/Observation", data=raw, content_type=FHIR_JSON)
    assert res.status_code == 201, res.data
    text = client.get(f"/fhir/Observation/{body(res)['id']}").data.decode()
    assert '"value":1.50' in text.replace(" ", "")
    assert "10:11:12.1+01:00" in text
    assert obs["code"] == body(res)["code"]


EXACT_DECIMALS = ('"valueQuantity":{"value":-1.000000000000000000E+245,"unit":"kg"},'
                  '"referenceRange":[{"low":{"value":0.000},"high":{"value":1E-7}}]')


def _decimal_observation(note: str) -> str:
    return ('{"resourceType":"Observation","status":"final","code":{"text":"' + note + '"},'
            + EXACT_DECIMALS + "}")


def test_decimal_text_is_served_as_written_on_every_path(client):
    """datatypes.html#decimal: precision and exponent as written; PostgreSQL stores the body as json
    text (storage/tables.py ResourceJson), because jsonb would print 1E+245 as 246 digits."""
    created = client.post("/fhir/Observation", data=_decimal_observation("posted"), content_type=FHIR_JSON)
    assert created.status_code == 201, created.data
    oid = body(created)["id"]
    updated = client.put(f"/fhir/Observation/{oid}", content_type=FHIR_JSON,
                         data=_decimal_observation("put").replace("{", '{"id":"' + oid + '",', 1))
    assert updated.status_code == 200, updated.data
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": "@", "request": {"method": "POST", "url": "Observation"}}]}
    raw_bundle = simplejson.dumps(bundle).replace('"@"', _decimal_observation("in a transaction"))
    batched = client.post("/fhir", data=raw_bundle, content_type=FHIR_JSON)
    assert batched.status_code == 200, batched.data
    batched_id = body(batched)["entry"][0]["response"]["location"].split("/")[1]
    served = [client.get(f"/fhir/Observation/{oid}"), client.get(f"/fhir/Observation/{oid}/_history/1"),
              client.get(f"/fhir/Observation/{oid}/_history"), client.get(f"/fhir/Observation?_id={oid}"),
              client.get(f"/fhir/Observation/{batched_id}")]
    for res in served:
        assert res.status_code == 200, res.data
        assert EXACT_DECIMALS in res.data.decode(), res.data.decode()


def test_update_versions_and_vread(client):
    created = body(post(client, patient()))
    pid = created["id"]
    changed = dict(created, gender="male")
    res = put(client, changed)
    assert res.status_code == 200
    assert body(res)["meta"]["versionId"] == "2"
    assert body(client.get(f"/fhir/Patient/{pid}/_history/1"))["gender"] == "female"
    assert body(client.get(f"/fhir/Patient/{pid}/_history/2"))["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/9").status_code == 404


def test_update_without_change_keeps_the_version(client):
    created = body(post(client, patient()))
    res = put(client, created)
    assert res.status_code == 200
    assert body(res)["meta"]["versionId"] == "1"
    history = body(client.get(f"/fhir/Patient/{created['id']}/_history"))
    assert history["total"] == 1


def test_update_as_create_with_client_id(client):
    res = put(client, patient(id="child-LA-0042"))
    assert res.status_code == 201
    assert body(client.get("/fhir/Patient/child-LA-0042"))["id"] == "child-LA-0042"


def test_if_match_rejects_a_stale_version(client):
    created = body(post(client, patient()))
    assert put(client, dict(created, gender="male"), **{"If-Match": 'W/"1"'}).status_code == 200
    stale = put(client, dict(created, gender="other"), **{"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert body(stale)["resourceType"] == "OperationOutcome"
    assert body(client.get(f"/fhir/Patient/{created['id']}"))["gender"] == "male"


def test_delete_is_soft_and_gone_then_history_kept(client):
    created = body(post(client, patient()))
    pid = created["id"]
    res = client.delete(f"/fhir/Patient/{pid}")
    assert res.status_code == 204
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert body(gone)["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    history = body(client.get(f"/fhir/Patient/{pid}/_history"))
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 204
    # a deleted resource can be brought back by an update, which is then a create
    assert put(client, dict(created)).status_code == 201


def test_read_unknown_is_404_with_outcome(client):
    res = client.get("/fhir/Patient/does-not-exist")
    assert res.status_code == 404
    assert body(res)["issue"][0]["code"] == "not-found"


def test_conditional_read(client):
    res = post(client, patient())
    pid = body(res)["id"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"0"'}).status_code == 200
    since = res.headers["Last-Modified"]
    assert client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": since}).status_code == 304
    assert client.get(f"/fhir/Patient/{pid}",
                      headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_prefer_return(client):
    minimal = post(client, patient(), Prefer="return=minimal")
    assert minimal.status_code == 201 and minimal.data == b""
    assert "Content-Type" not in minimal.headers
    assert minimal.headers["Location"]
    outcome = post(client, patient(), Prefer="return=OperationOutcome")
    assert body(outcome)["resourceType"] == "OperationOutcome"


def test_json_patch(client):
    created = body(post(client, patient()))
    ops = [{"op": "replace", "path": "/gender", "value": "male"},
           {"op": "add", "path": "/name/0/given/-", "value": "Chidi"}]
    res = client.patch(f"/fhir/Patient/{created['id']}", data=simplejson.dumps(ops),
                       content_type="application/json-patch+json")
    assert res.status_code == 200, res.data
    got = body(res)
    assert got["gender"] == "male" and got["name"][0]["given"] == ["Amara", "Chidi"]
    assert got["meta"]["versionId"] == "2"
    bad = client.patch(f"/fhir/Patient/{created['id']}", data=simplejson.dumps(
        [{"op": "replace", "path": "/birthDate", "value": "not-a-date"}]), content_type="application/json-patch+json")
    assert bad.status_code == 422
    assert body(client.get(f"/fhir/Patient/{created['id']}"))["meta"]["versionId"] == "2"


def test_errors_are_operation_outcomes_with_the_right_status(client):
    assert client.post("/fhir/Patient", data="{not json", content_type=FHIR_JSON).status_code == 400
    wrong_type = post(client, {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert wrong_type.status_code == 201  # POST to /Observation is fine
    mismatch = client.post("/fhir/Patient", data=simplejson.dumps({"resourceType": "Observation"}),
                           content_type=FHIR_JSON)
    assert mismatch.status_code == 400
    assert body(mismatch)["issue"][0]["expression"] == ["resourceType"]
    unknown = post(client, patient(favouriteColour="blue"))
    assert unknown.status_code == 422
    assert body(unknown)["issue"][0]["expression"] == ["Patient.favouriteColour"]
    id_mismatch = client.put("/fhir/Patient/a", data=simplejson.dumps(patient(id="b")), content_type=FHIR_JSON)
    assert id_mismatch.status_code == 400
    assert client.put("/fhir/Patient/..%2Fetc", data=simplejson.dumps(patient(id="../etc")),
                      content_type=FHIR_JSON).status_code in (400, 404)
    assert client.post("/fhir/Patient", data="<Patient/>", content_type="application/fhir+xml").status_code == 415
    assert client.get("/fhir/Patient/x", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/fhir/NotAType/1").status_code == 404
    assert client.delete("/fhir/metadata").status_code == 405
    deep = "[" * 200 + "]" * 200
    assert client.post("/fhir/Patient", data='{"resourceType":"Patient","x":' + deep + "}",
                       content_type=FHIR_JSON).status_code == 400
    for res in (mismatch, unknown, id_mismatch):
        assert body(res)["resourceType"] == "OperationOutcome"


def test_oversized_body_is_413(app):
    app.extensions["fhir"].settings = app.extensions["fhir"].settings.with_overrides(max_body_bytes=1000)
    big = simplejson.dumps(patient(text={"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"}))
    res = app.test_client().post("/fhir/Patient", data=big, content_type=FHIR_JSON)
    assert res.status_code == 413
    assert body(res)["resourceType"] == "OperationOutcome"


def test_conditional_create(client):
    ident = {"system": "https://example.org/la/123/child-id", "value": "LA-0001"}
    first = post(client, patient(identifier=[ident]), **{"If-None-Exist": "identifier=https://example.org/la/123/child-id|LA-0001"})
    assert first.status_code == 201
    second = post(client, patient(identifier=[ident]), **{"If-None-Exist": "identifier=https://example.org/la/123/child-id|LA-0001"})
    assert second.status_code == 200
    assert body(second)["id"] == body(first)["id"]


def test_conditional_update_and_delete(client):
    ident = {"system": "https://example.org/nhs", "value": "9434765919"}
    res = client.put("/fhir/Patient?identifier=https://example.org/nhs|9434765919",
                     data=simplejson.dumps(patient(identifier=[ident])), content_type=FHIR_JSON)
    assert res.status_code == 201
    pid = body(res)["id"]
    res = client.put("/fhir/Patient?identifier=https://example.org/nhs|9434765919",
                     data=simplejson.dumps(patient(identifier=[ident], gender="male")), content_type=FHIR_JSON)
    assert res.status_code == 200 and body(res)["id"] == pid and body(res)["meta"]["versionId"] == "2"
    assert client.delete("/fhir/Patient?identifier=https://example.org/nhs|9434765919").status_code == 204
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    post(client, patient(identifier=[ident]))
    post(client, patient(identifier=[ident]))
    assert client.delete("/fhir/Patient?identifier=https://example.org/nhs|9434765919").status_code == 412
    assert client.delete("/fhir/Patient").status_code == 412


def test_pretty_and_format(client):
    pid = body(post(client, patient()))["id"]
    pretty = client.get(f"/fhir/Patient/{pid}?_pretty=true&_format=json")
    assert pretty.status_code == 200 and b"\n  " in pretty.data
    assert client.get(f"/fhir/Patient/{pid}?_format=xml").status_code == 406


def _operation(**parts):
    out = []
    for name, value in parts.items():
        if name == "value":
            out.append({"name": "value", **value})
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, ("valueCode" if name == "type" else "valueString"): value})
    return {"name": "operation", "part": out}


def fhirpath_patch(client, pid, *operations):
    params = {"resourceType": "Parameters", "parameter": list(operations)}
    return client.patch(f"/fhir/Patient/{pid}", data=simplejson.dumps(params), content_type=FHIR_JSON)


def test_fhirpath_patch_operations(client):
    created = body(post(client, patient(identifier=[
        {"system": "https://example.org/upn", "value": "A123"},
        {"system": "https://example.org/la-child", "value": "LA-9"}])))
    pid = created["id"]
    res = fhirpath_patch(
        client, pid,
        _operation(type="replace", path="Patient.gender", value={"valueCode": "male"}),
        _operation(type="add", path="Patient", name="telecom",
                   value={"part": [{"name": "system", "valueCode": "phone"},
                                   {"name": "value", "valueString": "01632 960123"}]}),
        _operation(type="insert", path="Patient.name[0].given", index=0, value={"valueString": "Ada"}),
        _operation(type="delete", path="Patient.identifier.where(system='https://example.org/upn')"),
        _operation(type="add", path="Patient", name="deceasedBoolean", value={"valueBoolean": False}),
    )
    assert res.status_code == 200, res.data
    got = body(res)
    assert got["gender"] == "male"
    assert got["telecom"] == [{"system": "phone", "value": "01632 960123"}]
    assert got["name"][0]["given"] == ["Ada", "Amara"]
    assert got["identifier"] == [{"system": "https://example.org/la-child", "value": "LA-9"}]
    assert got["deceasedBoolean"] is False
    moved = fhirpath_patch(client, pid, _operation(type="move", path="Patient.name[0].given", source=1,
                                                   destination=0))
    assert body(moved)["name"][0]["given"] == ["Amara", "Ada"]


def test_fhirpath_patch_rejects_ambiguous_or_unsupported_paths_and_writes_nothing(client):
    pid = body(post(client, patient(name=[{"family": "A"}, {"family": "B"}])))["id"]
    ambiguous = fhirpath_patch(client, pid, _operation(type="replace", path="Patient.name.family",
                                                       value={"valueString": "C"}))
    assert ambiguous.status_code == 422
    assert body(ambiguous)["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    unsupported = fhirpath_patch(client, pid, _operation(type="delete", path="Patient.name.select(family)"))
    assert unsupported.status_code == 422
    assert body(client.get(f"/fhir/Patient/{pid}"))["meta"]["versionId"] == "1"
