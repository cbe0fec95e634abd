"""fhirclient (SMART on FHIR's Python client, 4.x = FHIR 4.0.1 models) against the live server:
capability statement, create, read, update, search with paging and _include, and a transaction
Bundle (http.html, search.html).

The client parses every response into its strict R4 models, so each call here also checks that
what the server sends is valid R4 JSON as that client understands it.
"""
from __future__ import annotations

import uuid
from typing import TypeVar

import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirabstractresource import FHIRAbstractResource
from fhirclient.models.humanname import HumanName
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRServer

from .conftest import LiveServer

R = TypeVar("R", bound=FHIRAbstractResource)


@pytest.fixture
def server(live_server: LiveServer) -> FHIRServer:
    smart = smart_client.FHIRClient(settings={"app_id": "safeguarding-tests", "api_base": live_server.base_url})
    assert smart.prepare()  # reads /metadata into the R4 CapabilityStatement model; an open server
    return smart.server


def _new_patient(family: str) -> Patient:
    child = Patient()
    name = HumanName()
    name.family = family
    name.given = ["Amara"]
    child.name = [name]
    child.gender = "female"
    return child


def _create(resource: R, server: FHIRServer) -> R:
    """``create`` returns the server's JSON; the id comes from there (the model is not updated)."""
    created = resource.create(server)
    assert created is not None, "the server should return the created resource (Prefer default)"
    return type(resource)(created)


def _weight(subject_id: str, day: int) -> Observation:
    return Observation({"status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                        "subject": {"reference": f"Patient/{subject_id}"},
                        "effectiveDateTime": f"2025-03-{day:02d}", "valueQuantity": {"value": 20 + day, "unit": "kg"}})


def test_capability_statement_parses_as_r4(server: FHIRServer) -> None:
    capability = server.capabilityStatement
    assert isinstance(capability, CapabilityStatement)
    assert capability.fhirVersion.startswith("4.0")
    assert "Patient" in {r.type for r in capability.rest[0].resource}


def test_create_read_update(server: FHIRServer) -> None:
    created = _create(_new_patient("Okafor"), server)
    assert created.id
    assert created.meta.versionId == "1"

    read = Patient.read(created.id, server)
    assert read.name[0].family == "Okafor"
    assert read.meta.versionId == "1"

    read.gender = "male"
    updated = Patient(read.update())  # PUT Patient/{id}, the instance remembers its server
    assert updated.meta.versionId == "2"
    assert Patient.read(created.id, server).gender == "male"

    with pytest.raises(FHIRNotFoundException):
        Patient.read("no-such-child", server)


def test_search_pages_through_every_result_and_includes_the_subject(server: FHIRServer) -> None:
    child = _create(_new_patient("Okafor"), server)
    other = _create(_new_patient("Jones"), server)
    created = {_create(_weight(child.id, day), server).id for day in range(1, 6)}
    _create(_weight(other.id, 9), server)

    search = Observation.where({"subject": f"Patient/{child.id}", "_count": "2", "_sort": "date"}) \
        .include("subject")
    pages = list(search.perform_iter(server))  # follows Bundle.link[next] until there is none
    assert len(pages) == 3
    assert all(page.total == 5 for page in pages)
    matches = [e.resource for page in pages for e in page.entry if e.search.mode == "match"]
    assert {o.id for o in matches} == created
    assert [o.effectiveDateTime.as_json() for o in matches] == [f"2025-03-{d:02d}" for d in range(1, 6)]
    for page in pages:  # the subject is included on every page that has a match pointing at it
        included = [e.resource for e in page.entry if e.search.mode == "include"]
        assert [(r.resource_type, r.id) for r in included] == [("Patient", child.id)]

    resources = list(search.perform_resources_iter(server))
    assert sorted(r.resource_type for r in resources) == ["Observation"] * 5 + ["Patient"] * 3


def test_transaction_bundle_resolves_placeholder_references(server: FHIRServer) -> None:
    child_urn = f"urn:uuid:{uuid.uuid4()}"
    child_entry = BundleEntry()
    child_entry.fullUrl = child_urn
    child_entry.resource = _new_patient("Mensah")
    child_entry.request = BundleEntryRequest({"method": "POST", "url": "Patient"})
    obs_entry = BundleEntry()
    obs_entry.resource = Observation({"status": "final", "code": {"text": "weight"},
                                      "subject": {"reference": child_urn}})
    obs_entry.request = BundleEntryRequest({"method": "POST", "url": "Observation"})
    transaction = Bundle()
    transaction.type = "transaction"
    transaction.entry = [child_entry, obs_entry]

    response = Bundle(transaction.create(server))  # createPath() is the base for transactions
    assert response.type == "transaction-response"
    assert [e.response.status.split()[0] for e in response.entry] == ["201", "201"]
    patient_id = response.entry[0].response.location.split("/Patient/", 1)[1].split("/")[0]
    observation_id = response.entry[1].response.location.split("/Observation/", 1)[1].split("/")[0]

    obs = Observation.read(observation_id, server)
    assert obs.subject.reference == f"Patient/{patient_id}"
    assert Patient.read(patient_id, server).name[0].family == "Mensah"

    # the same through the server object's low-level post to the base URL
    again = server.post_json("", transaction.as_json())
    assert again.status_code == 200
    assert Bundle(again.json()).type == "transaction-response"
