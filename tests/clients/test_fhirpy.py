"""fhirpy (the Beda/Aidbox Python client, sync API) against the live server: create, read,
update, search with paging and _include, and a transaction Bundle (http.html, search.html)."""
from __future__ import annotations

import uuid

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from .conftest import LiveServer

LOINC_WEIGHT = "29463-7"


@pytest.fixture
def fhir(live_server: LiveServer) -> SyncFHIRClient:
    return SyncFHIRClient(live_server.base_url)


def _child(fhir: SyncFHIRClient, family: str = "Okafor"):
    child = fhir.resource("Patient", name=[{"family": family, "given": ["Amara"]}], gender="female",
                          birthDate="2015-03-09")
    child.save()
    return child


def _weight(fhir: SyncFHIRClient, subject, day: int):
    obs = fhir.resource("Observation", status="final",
                        code={"coding": [{"system": "http://loinc.org", "code": LOINC_WEIGHT}]},
                        subject=subject.to_reference(), effectiveDateTime=f"2025-03-{day:02d}",
                        valueQuantity={"value": 20 + day, "unit": "kg"})
    obs.save()
    return obs


def test_create_read_update(fhir: SyncFHIRClient) -> None:
    child = _child(fhir)
    assert child.id
    assert child["meta"]["versionId"] == "1"

    read = fhir.reference("Patient", child.id).to_resource()
    assert read["name"][0]["family"] == "Okafor"
    assert read["meta"]["versionId"] == "1"

    read["gender"] = "male"
    read.save()  # PUT Patient/{id}
    assert read["meta"]["versionId"] == "2"
    assert fhir.get("Patient", child.id)["gender"] == "male"

    read.refresh()  # conditional GET with If-None-Match: the server answers 304 Not Modified
    assert read["meta"]["versionId"] == "2"
    _, status = fhir._do_request("get", f"Patient/{child.id}", extra_headers={"If-None-Match": 'W/"2"'},
                                 returning_status=True)
    assert status == 304

    with pytest.raises(ResourceNotFound):
        fhir.get("Patient", "no-such-child")


def test_search_pages_through_every_result_and_includes_the_subject(fhir: SyncFHIRClient) -> None:
    child = _child(fhir)
    other = _child(fhir, family="Jones")
    created = {_weight(fhir, child, day).id for day in range(1, 6)}
    _weight(fhir, other, 9)

    weights = fhir.resources("Observation").search(subject=child.to_reference().reference,
                                                   code=f"http://loinc.org|{LOINC_WEIGHT}")
    assert weights.count() == 5
    first_page = weights.limit(2).fetch()
    assert len(first_page) == 2
    every = weights.limit(2).fetch_all()  # follows Bundle.link[next] to the end
    assert {o.id for o in every} == created
    assert len(every) == 5

    newest = weights.sort("-date").limit(2).include("Observation", "subject").fetch_raw()
    assert newest["total"] == 5
    matches = [e for e in newest.entry if e.search.mode == "match"]
    included = [e for e in newest.entry if e.search.mode == "include"]
    assert [e.resource["effectiveDateTime"] for e in matches] == ["2025-03-05", "2025-03-04"]
    assert [(e.resource.resourceType, e.resource.id) for e in included] == [("Patient", child.id)]
    assert any(link.relation == "next" for link in newest.link)


def test_transaction_bundle_resolves_placeholder_references(fhir: SyncFHIRClient) -> None:
    child_urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": child_urn, "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "name": [{"family": "Mensah"}]}},
            {"request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                          "subject": {"reference": child_urn}}},
        ],
    }
    response = fhir.execute("", method="post", data=bundle)
    assert response["resourceType"] == "Bundle"
    assert response["type"] == "transaction-response"
    assert [e.response.status.split()[0] for e in response.entry] == ["201", "201"]
    patient_id = response.entry[0].response.location.split("/Patient/", 1)[1].split("/")[0]
    observation_id = response.entry[1].response.location.split("/Observation/", 1)[1].split("/")[0]

    obs = fhir.get("Observation", observation_id)
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    assert fhir.resources("Observation").search(subject=f"Patient/{patient_id}").count() == 1
