"""``Patient/[id]/$everything`` through HTTP on SQLite and PostgreSQL: one child known to four agencies,
linked by a master record, with a sibling, carers and an unrelated child who must never appear.

:func:`family_bundle` builds that family as one transaction Bundle of agency-tagged resources (the
shapes the agency mappings produce); test_family_summary.py uses it too.
"""
from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import simplejson

from fhir_server.single_view.links import link_groups, link_targets
from fhir_server.single_view.pages import page_after, parse_cursor, sort_key
from fhir_server.single_view.record import Found

from .test_crud import body

FHIR_JSON = "application/fhir+json"
CB = "https://w3id.org/sg-fhir"
AGENCY_TAG = f"{CB}/CodeSystem/source-agency"
RISK = f"{CB}/CodeSystem/risk-factor"
CIN_FACTOR = f"{CB}/CodeSystem/cin-assessment-factor"
EPISODE = f"{CB}/CodeSystem/episode-type"
SG_FLAG = f"{CB}/CodeSystem/safeguarding-flag"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
POLICE_REL = f"{CB}/CodeSystem/police-relationship"
MASTER = f"{CB}/Id/master-person"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

AGENCIES = {
    "la": ("local-authority/201", "Local authority 201 children's social care", "org-la", f"{CB}/Id/la-code", "201"),
    "police": ("police/20", "20 Police", "org-police", f"{CB}/Id/police-force", "20"),
    "school": ("education/100234", "Hillside Primary School", "org-school", f"{CB}/Id/school-urn", "100234"),
    "health": ("health/R9Q", "Calderdale Royal Hospital", "org-health", "https://fhir.nhs.uk/Id/ods-organization-code",
               "R9Q"),
}
MAYA_RECORDS = ("maya-master", "maya-la", "maya-police", "maya-school", "maya-health")


def day(offset: int) -> str:
    """A date ``offset`` days from today (the family's history moves with the clock)."""
    return (date.today() + timedelta(days=offset)).isoformat()


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def family_bundle() -> dict[str, Any]:
    """The Whitfield family as a transaction Bundle (PUT with our ids, so tests can name resources).

    Maya (10) is known to the local authority (CIN and CP plan, a closed early-help episode, assessment
    factors about a parent's drug misuse and domestic abuse), the police (a domestic abuse incident with
    her mother's partner as alleged perpetrator; a MARAC referral of her mother), her school
    (attendance, a suspension, attendance support) and the emergency department (an attendance with a
    safeguarding concern). A master record links her four agency records; the LA record links back.
    Her brother Leo is known to the police (same adults) and the LA (same address), linked by his own
    master record. Their mother is also a health Patient in a substance misuse service. Noah lives
    next door (same postcode, another house) and must never appear in Maya's record or family.
    """
    res: list[dict[str, Any]] = []

    def add(agency: str | None, resource: dict[str, Any]) -> dict[str, Any]:
        if agency is not None:
            code, name, *_ = AGENCIES[agency]
            resource["meta"] = {**resource.get("meta", {}), "source": f"{CB}/agency/{code}",
                                "tag": [{"system": AGENCY_TAG, "code": code, "display": name}]}
        res.append(resource)
        return resource

    for key, (_code, name, org_id, system, value) in AGENCIES.items():
        add(key, {"resourceType": "Organization", "id": org_id, "identifier": [{"system": system, "value": value}],
                  "active": True, "name": name})
    add("la", {"resourceType": "Practitioner", "id": "pr-sw", "name": [{"family": "Shah", "given": ["Priya"]}]})
    add("school", {"resourceType": "Practitioner", "id": "pr-dsl", "name": [{"family": "Reed", "given": ["Tom"]}]})

    home = {"line": ["12 Rowan Close"], "city": "Leeds", "postalCode": "LS6 2AB"}
    maya = {"name": [{"family": "Whitfield", "given": ["Maya"]}], "birthDate": "2014-05-20", "gender": "female"}
    add(None, {"resourceType": "Patient", "id": "maya-master", **maya,
               "identifier": [{"system": MASTER, "value": "MP-0001"}],
               "link": [{"other": ref(f"Patient/{r}"), "type": "seealso"} for r in MAYA_RECORDS[1:]]})
    add("la", {"resourceType": "Patient", "id": "maya-la", **maya, "address": [home],
               "identifier": [{"system": f"{CB}/Id/la-child-id/201", "value": "C1001"}],
               "link": [{"other": ref("Patient/maya-master"), "type": "refer"}]})
    add("police", {"resourceType": "Patient", "id": "maya-police", **maya, "address": [{"postalCode": "ls6 2ab"}],
                   "identifier": [{"system": f"{CB}/Id/20/person", "value": "P100"}]})
    add("school", {"resourceType": "Patient", "id": "maya-school", **maya,
                   "address": [{"line": ["12  Rowan Close."], "postalCode": "LS62AB"}],
                   "identifier": [{"system": f"{CB}/Id/upn", "value": "K201400112345"}]})
    add("health", {"resourceType": "Patient", "id": "maya-health", **maya,
                   "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"},
                                  {"system": f"{CB}/Id/R9Q/hospital-number", "value": "H1001"}]})

    # local authority
    add("la", {"resourceType": "EpisodeOfCare", "id": "eoc-cin", "status": "active", "type": [concept(EPISODE, "cin")],
               "patient": ref("Patient/maya-la"), "managingOrganization": ref("Organization/org-la"),
               "period": {"start": day(-320)}, "careManager": ref("Practitioner/pr-sw")})
    add("la", {"resourceType": "EpisodeOfCare", "id": "eoc-cp", "status": "active",
               "type": [concept(EPISODE, "cp-plan"), concept(f"{CB}/CodeSystem/cin-category-of-abuse", "EMO")],
               "patient": ref("Patient/maya-la"), "managingOrganization": ref("Organization/org-la"),
               "period": {"start": day(-250)}, "careManager": ref("Practitioner/pr-sw")})
    add("la", {"resourceType": "Flag", "id": "flag-cp", "status": "active", "code": concept(SG_FLAG, "cp-plan"),
               "category": [{"text": "Safeguarding"}], "subject": ref("Patient/maya-la"),
               "period": {"start": day(-250)}, "author": ref("Organization/org-la")})
    add("la", {"resourceType": "EpisodeOfCare", "id": "eoc-early-help", "status": "finished",
               "type": [concept(EPISODE, "early-help")], "patient": ref("Patient/maya-la"),
               "managingOrganization": ref("Organization/org-la"),
               "period": {"start": day(-600), "end": day(-420)}, "careManager": ref("Practitioner/pr-sw")})
    for obs_id, factor, when in (("obs-cin-2b", "2B", -310), ("obs-cin-3b", "3B", -310), ("obs-cin-old", "1A", -2400)):
        add("la", {"resourceType": "Observation", "id": obs_id, "status": "final",
                   "category": [concept(OBS_CATEGORY, "social-history")],
                   "code": concept(CIN_FACTOR, factor), "subject": ref("Patient/maya-la"),
                   "effectiveDateTime": day(when), "performer": [ref("Organization/org-la")]})
    add("la", {"resourceType": "RelatedPerson", "id": "rp-la-claire", "patient": ref("Patient/maya-la"),
               "relationship": [concept(ROLE, "MTH", "mother")], "name": [{"family": "Whitfield", "given": ["Claire"]}],
               "birthDate": "1989-02-11", "address": [home]})
    add("la", {"resourceType": "Patient", "id": "leo-la", "name": [{"family": "Whitfield", "given": ["Leo"]}],
               "birthDate": "2017-09-01", "gender": "male", "address": [{**home, "postalCode": "LS6 2AB"}],
               "identifier": [{"system": f"{CB}/Id/la-child-id/201", "value": "C1002"}]})
    add("la", {"resourceType": "EpisodeOfCare", "id": "eoc-leo-cin", "status": "active",
               "type": [concept(EPISODE, "cin")], "patient": ref("Patient/leo-la"),
               "period": {"start": day(-320)}, "careManager": ref("Practitioner/pr-sw")})
    add("la", {"resourceType": "Patient", "id": "noah-la", "name": [{"family": "Price", "given": ["Noah"]}],
               "birthDate": "2014-05-20", "address": [{"line": ["14 Rowan Close"], "postalCode": "LS6 2AB"}],
               "identifier": [{"system": f"{CB}/Id/la-child-id/201", "value": "C2000"}]})
    add("la", {"resourceType": "Observation", "id": "obs-noah", "status": "final", "code": concept(CIN_FACTOR, "16A"),
               "subject": ref("Patient/noah-la"), "effectiveDateTime": day(-20)})

    # police: one incident, both children; adults keyed per force person id
    for child, pid in (("maya-police", "P100"), ("leo-police", "P101")):
        if child == "leo-police":
            add("police", {"resourceType": "Patient", "id": "leo-police", "identifier": [
                {"system": f"{CB}/Id/20/person", "value": "P101"}], "name": [{"family": "Whitfield", "given": ["Leo"]}],
                "birthDate": "2017-09-01", "address": [{"postalCode": "LS6 2AB"}]})
        short = child.split("-")[0]
        add("police", {"resourceType": "RelatedPerson", "id": f"rp-pol-kyle-{short}",
                       "patient": ref(f"Patient/{child}"),
                       "identifier": [{"system": f"{CB}/Id/20/relationship", "value": f"A300:{pid}"},
                                      {"system": f"{CB}/Id/20/person", "value": "A300"}],
                       "relationship": [concept(POLICE_REL, "mothers-partner", "Mother's partner")],
                       "name": [{"family": "Benson", "given": ["Kyle"]}], "birthDate": "1990-03-03"})
        add("police", {"resourceType": "RelatedPerson", "id": f"rp-pol-claire-{short}",
                       "patient": ref(f"Patient/{child}"),
                       "identifier": [{"system": f"{CB}/Id/20/relationship", "value": f"A301:{pid}"},
                                      {"system": f"{CB}/Id/20/person", "value": "A301"}],
                       "relationship": [concept(ROLE, "MTH", "mother")],
                       "name": [{"family": "Whitfield", "given": ["Claire"]}], "birthDate": "1989-02-11"})
        add("police", {"resourceType": "Observation", "id": f"obs-da-{short}", "status": "final",
                       "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                              "code": "R"}]},
                       "code": concept(RISK, "domestic-abuse-child-present" if short == "maya"
                                       else "domestic-abuse-child-not-present"),
                       "subject": ref(f"Patient/{child}"), "effectiveDateTime": f"{day(-200)}T21:40:00+00:00",
                       "performer": [ref("Organization/org-police")],
                       "note": [{"text": "Circumstances: neighbour heard shouting <and> a door smashed."}],
                       "extension": [
                           {"url": f"{CB}/StructureDefinition/involved-adult", "extension": [
                               {"url": "role", "valueCodeableConcept": concept(f"{CB}/CodeSystem/police-adult-role",
                                                                               "alleged-perpetrator")},
                               {"url": "person", "valueReference": ref(f"RelatedPerson/rp-pol-kyle-{short}")}]},
                           {"url": f"{CB}/StructureDefinition/involved-adult", "extension": [
                               {"url": "role", "valueCodeableConcept": concept(f"{CB}/CodeSystem/police-adult-role",
                                                                               "victim")},
                               {"url": "person", "valueReference": ref(f"RelatedPerson/rp-pol-claire-{short}")}]}]})
    add("police", {"resourceType": "Observation", "id": "obs-marac", "status": "final",
                   "code": concept(RISK, "marac-referral"), "subject": ref("Patient/maya-police"),
                   "focus": [ref("RelatedPerson/rp-pol-claire-maya")], "effectiveDateTime": day(-190),
                   "performer": [ref("Organization/org-police")]})
    add(None, {"resourceType": "Patient", "id": "leo-master", "name": [{"family": "Whitfield", "given": ["Leo"]}],
               "birthDate": "2017-09-01", "identifier": [{"system": MASTER, "value": "MP-0002"}],
               "link": [{"other": ref("Patient/leo-police"), "type": "seealso"},
                        {"other": ref("Patient/leo-la"), "type": "seealso"}]})

    # school
    add("school", {"resourceType": "Observation", "id": "obs-attendance", "status": "final",
                   "code": concept(RISK, "school-attendance"), "subject": ref("Patient/maya-school"),
                   "effectivePeriod": {"start": day(-150), "end": day(-60)},
                   "valueQuantity": {"value": 78, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
                   "component": [{"code": concept(RISK, "persistent-absence"), "valueBoolean": True}],
                   "performer": [ref("Organization/org-school")]})
    add("school", {"resourceType": "Observation", "id": "obs-suspension", "status": "final",
                   "code": concept(RISK, "suspension"), "subject": ref("Patient/maya-school"),
                   "effectiveDateTime": day(-100), "performer": [ref("Organization/org-school")]})
    add("school", {"resourceType": "EpisodeOfCare", "id": "eoc-attendance-support", "status": "active",
                   "type": [concept(EPISODE, "school-attendance-support")], "patient": ref("Patient/maya-school"),
                   "managingOrganization": ref("Organization/org-school"), "period": {"start": day(-90)},
                   "careManager": ref("Practitioner/pr-dsl")})

    # emergency department; the mother's own health record
    add("health", {"resourceType": "Observation", "id": "obs-ed", "status": "final",
                   "code": concept(RISK, "ed-attendance"),
                   "subject": ref("Patient/maya-health"), "effectiveDateTime": f"{day(-30)}T19:20:00+00:00",
                   "performer": [ref("Organization/org-health")], "hasMember": [ref("Observation/obs-ed-concern")]})
    add("health", {"resourceType": "Observation", "id": "obs-ed-concern", "status": "final",
                   "code": concept(RISK, "ed-safeguarding-concern"), "subject": ref("Patient/maya-health"),
                   "effectiveDateTime": f"{day(-30)}T19:20:00+00:00", "performer": [ref("Organization/org-health")],
                   "valueCodeableConcept": {"text": "Explanation inconsistent with the injury"}})
    add("health", {"resourceType": "Patient", "id": "claire-health",
                   "name": [{"family": "Whitfield", "given": ["Claire"]}],
                   "birthDate": "1989-02-11", "gender": "female",
                   "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}]})
    add("health", {"resourceType": "EpisodeOfCare", "id": "eoc-claire-sms", "status": "active",
                   "type": [concept(EPISODE, "substance-misuse-service")], "patient": ref("Patient/claire-health"),
                   "managingOrganization": ref("Organization/org-health"), "period": {"start": day(-60)}})

    # one Provenance per agency import, targeting everything that agency sent
    for key, (code, name, org_id, *_rest) in AGENCIES.items():
        targets = [r for r in res if r["resourceType"] not in ("Organization",)
                   and r.get("meta", {}).get("tag", [{}])[0].get("code") == code]
        add(None, {"resourceType": "Provenance", "id": f"prov-{key}",
                   "target": [ref(f"{r['resourceType']}/{r['id']}") for r in targets],
                   "recorded": f"{day(-10)}T09:00:00+00:00",
                   "policy": ["https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18"],
                   "agent": [{"type": concept("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                              "custodian"), "who": {"reference": f"Organization/{org_id}",
                                                                    "display": name}}],
                   "entity": [{"role": "source", "what": {"display": f"{key}_export.csv"}}]})
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": f"{CB}/test/{r['resourceType']}/{r['id']}", "resource": r,
                       "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in res]}


def load_family(client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    bundle = family_bundle()
    res = client.post("/fhir", data=simplejson.dumps(bundle), content_type=FHIR_JSON, headers=headers or {})
    assert res.status_code == 200, res.data[:2000]
    return bundle


def everything(client, patient: str = "maya-master", query: str = "") -> dict[str, Any]:
    res = client.get(f"/fhir/Patient/{patient}/$everything{query}")
    assert res.status_code == 200, res.data[:2000]
    return body(res)


def keys(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if mode is None or e["search"]["mode"] == mode}


MAYA_MEMBERS = {
    *(f"Patient/{r}" for r in MAYA_RECORDS),
    "EpisodeOfCare/eoc-cin", "EpisodeOfCare/eoc-cp", "EpisodeOfCare/eoc-early-help",
    "EpisodeOfCare/eoc-attendance-support",
    "Flag/flag-cp", "Observation/obs-cin-2b", "Observation/obs-cin-3b", "Observation/obs-cin-old",
    "Observation/obs-da-maya", "Observation/obs-marac", "Observation/obs-attendance", "Observation/obs-suspension",
    "Observation/obs-ed", "Observation/obs-ed-concern",
    "RelatedPerson/rp-la-claire", "RelatedPerson/rp-pol-kyle-maya", "RelatedPerson/rp-pol-claire-maya",
    "Provenance/prov-la", "Provenance/prov-police", "Provenance/prov-school", "Provenance/prov-health",
}
MAYA_INCLUDES = {"Organization/org-la", "Organization/org-police", "Organization/org-school", "Organization/org-health",
                 "Practitioner/pr-sw", "Practitioner/pr-dsl"}


# -- HTTP ---------------------------------------------------------------------------------------------

def test_everything_spans_every_linked_agency_record_and_nothing_else(client):
    load_family(client)
    bundle = everything(client)
    assert bundle["type"] == "searchset"
    assert keys(bundle, "match") == MAYA_MEMBERS
    assert keys(bundle, "include") == MAYA_INCLUDES
    assert bundle["total"] == len(MAYA_MEMBERS)
    first = bundle["entry"][0]
    assert first["resource"]["id"] == "maya-master" and first["fullUrl"] == "http://localhost/fhir/Patient/maya-master"
    assert [e["resource"]["resourceType"] for e in bundle["entry"][:5]] == ["Patient"] * 5
    assert [e["search"]["mode"] for e in bundle["entry"]][-len(MAYA_INCLUDES):] == ["include"] * len(MAYA_INCLUDES)
    assert {r["relation"] for r in bundle["link"]} == {"self", "first", "last"}
    # from an agency record the same child is found through the master (links followed both ways)
    for start in ("maya-police", "maya-la"):
        other = everything(client, start)
        assert keys(other) == MAYA_MEMBERS | MAYA_INCLUDES
        assert other["entry"][0]["resource"]["id"] == start


def test_other_children_and_adults_never_leak(client):
    load_family(client)
    found = keys(everything(client))
    for foreign in ("Patient/noah-la", "Observation/obs-noah", "Patient/leo-la", "Patient/leo-police",
                    "Patient/leo-master", "Observation/obs-da-leo", "RelatedPerson/rp-pol-kyle-leo",
                    "Patient/claire-health", "EpisodeOfCare/eoc-claire-sms", "EpisodeOfCare/eoc-leo-cin"):
        assert foreign not in found
    leo = everything(client, "leo-la")
    assert "Patient/maya-la" not in keys(leo) and "Observation/obs-da-leo" in keys(leo)
    assert keys(everything(client, "noah-la"), "match") == {"Patient/noah-la", "Observation/obs-noah",
                                                             "Provenance/prov-la"}


def test_unknown_patient_is_404_whatever_the_parameters(client):
    load_family(client)
    for query in ("", "?_type=Observation", "?_count=1", "?start=2020-01-01"):
        res = client.get(f"/fhir/Patient/nobody/$everything{query}")
        assert res.status_code == 404, query
        assert body(res)["resourceType"] == "OperationOutcome"
        assert "maya" not in res.get_data(as_text=True)
    assert client.post("/fhir/Patient/nobody/$everything").status_code == 404
    assert client.get("/fhir/Patient/bad$id/$everything").status_code in (400, 404)
    client.delete("/fhir/Patient/noah-la")
    assert client.get("/fhir/Patient/noah-la/$everything").status_code == 410


def test_type_applies_to_everything_including_the_patient(client):
    load_family(client)
    obs = everything(client, query="?_type=Observation")
    assert keys(obs) == {k for k in MAYA_MEMBERS if k.startswith("Observation/")}
    assert obs["total"] == len(keys(obs))
    both = everything(client, query="?_type=Patient,Flag&_type=Organization")
    assert keys(both, "match") == {*(f"Patient/{r}" for r in MAYA_RECORDS), "Flag/flag-cp"}
    assert keys(both, "include") == {"Organization/org-la"}  # only the Flag's author: Patients reference none
    res = client.get("/fhir/Patient/maya-master/$everything?_type=Nonsense")
    assert res.status_code == 400 and body(res)["issue"][0]["expression"] == ["_type"]


def test_start_and_end_select_care_dates_and_keep_undated_resources(client):
    load_family(client)
    recent = everything(client, query=f"?start={day(-35)}")
    dated = {k for k in keys(recent, "match") if k.split("/")[0] in ("Observation", "EpisodeOfCare", "Flag")}
    # still-open episodes and plans overlap any later range; closed and older facts do not
    assert dated == {"Observation/obs-ed", "Observation/obs-ed-concern", "EpisodeOfCare/eoc-cin",
                     "EpisodeOfCare/eoc-cp", "EpisodeOfCare/eoc-attendance-support", "Flag/flag-cp"}
    assert {f"Patient/{r}" for r in MAYA_RECORDS} | {"RelatedPerson/rp-la-claire"} <= keys(recent)
    old = everything(client, query=f"?end={day(-2000)}")
    assert {k for k in keys(old, "match") if k.startswith(("Observation", "EpisodeOfCare", "Flag"))} == {
        "Observation/obs-cin-old"}
    window = everything(client, query=f"?start={day(-205)}&end={day(-195)}&_type=Observation")
    assert keys(window) == {"Observation/obs-da-maya"}
    period = everything(client, query=f"?start={day(-70)}&end={day(-65)}&_type=Observation")
    assert keys(period) == {"Observation/obs-attendance"}  # a Period overlapping the range
    res = client.get(f"/fhir/Patient/maya-master/$everything?start={day(0)}&end={day(-10)}")
    assert res.status_code == 400
    assert client.get("/fhir/Patient/maya-master/$everything?start=yesterday").status_code == 400


def test_since_selects_by_last_updated(client):
    load_family(client)
    time.sleep(0.01)
    changed = dict(everything(client, query="?_type=Observation")["entry"][0]["resource"])
    changed["status"] = "amended"
    res = client.put(f"/fhir/Observation/{changed['id']}", data=simplejson.dumps(changed), content_type=FHIR_JSON)
    assert res.status_code == 200
    mark = body(res)["meta"]["lastUpdated"]
    later = everything(client, query=f"?_since={mark.replace('+', '%2B')}")
    assert keys(later) == {f"Observation/{changed['id']}"}
    assert later["total"] == 1
    assert client.get("/fhir/Patient/maya-master/$everything?_since=soon").status_code == 400


def test_count_pages_through_a_snapshot_with_keyset_links(client):
    load_family(client)
    whole = everything(client)
    expected = [e["fullUrl"] for e in whole["entry"]]
    seen: list[str] = []
    page = everything(client, query="?_count=7")
    first_links = {r["relation"]: r["url"] for r in page["link"]}
    assert page["total"] == len(MAYA_MEMBERS)
    assert {r["relation"] for r in page["link"]} == {"self", "first", "next", "last"}
    created = False
    while True:
        seen += [e["fullUrl"] for e in page["entry"]]
        links = {r["relation"]: r["url"] for r in page["link"]}
        if not created:  # a resource created and one deleted after the first page: pages do not move
            obs = {"resourceType": "Observation", "status": "final", "code": {"text": "late"},
                   "subject": ref("Patient/maya-la")}
            res = client.post("/fhir/Observation", data=simplejson.dumps(obs), content_type=FHIR_JSON)
            assert res.status_code == 201
            created = True
        if "next" not in links:
            break
        assert "_snapshot=" in links["next"] and "_cursor=" in links["next"]
        page = everything(client, query="?" + urlsplit(links["next"]).query)
        assert "previous" in {r["relation"] for r in page["link"]}
    assert seen == expected
    tail = everything(client, query="?" + urlsplit(first_links["last"]).query)
    assert [e["fullUrl"] for e in tail["entry"]] == expected[(len(expected) - 1) // 7 * 7:]
    assert client.get("/fhir/Patient/maya-master/$everything?_cursor=nonsense").status_code == 400
    counted = everything(client, query="?_count=0")
    assert counted["total"] == len(MAYA_MEMBERS) + 1 and "entry" not in counted


def test_post_with_parameters(client):
    load_family(client)
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueCode": "Flag,EpisodeOfCare"}, {"name": "start", "valueDate": day(-35)},
        {"name": "_count", "valueInteger": 2}]}
    res = client.post("/fhir/Patient/maya-master/$everything", data=simplejson.dumps(params), content_type=FHIR_JSON)
    assert res.status_code == 200, res.data
    bundle = body(res)
    assert bundle["total"] == 4 and len(bundle["entry"]) == 2
    nxt = {r["relation"]: r["url"] for r in bundle["link"]}["next"]
    assert "_type=Flag,EpisodeOfCare" in nxt and f"start={day(-35)}" in nxt
    bad = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": "x"}]}
    assert client.post("/fhir/Patient/maya-master/$everything", data=simplejson.dumps(bad),
                       content_type=FHIR_JSON).status_code == 400
    assert client.get("/fhir/Patient/maya-master/$everything?foo=1").status_code == 400
    assert client.post("/fhir/Patient/maya-master/$everything").status_code == 200


def test_listed_in_the_capability_statement(client):
    statement = body(client.get("/fhir/metadata"))
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name": "everything", "definition": "https://w3id.org/sg-fhir/OperationDefinition/Patient-everything"} \
        in patient["operation"]


def test_with_authentication_the_token_scopes_narrow_the_record(engine, settings):
    """The scope guard lets ``system/Patient.rs`` call Patient/[id]/$everything; what it then sees is only
    the types its scopes can read."""
    from fhir_server import create_app

    from .test_auth import server_token

    conn = engine.connect()
    outer = conn.begin()
    try:
        app = create_app(settings.with_overrides(auth_enabled=True, auth_key_cache_seconds=0), connection=conn)
        auth = app.extensions["fhir"].auth
        client = app.test_client()
        # loaded as the server's own work (a client registered with role "system": no agency rules)
        load_family(client, {"Authorization": f"Bearer {server_token(auth, role='system')}"})
        narrow = {"Authorization": f"Bearer {server_token(auth, scope='system/Patient.rs system/Flag.rs')}"}
        res = client.get("/fhir/Patient/maya-master/$everything", headers=narrow)
        assert res.status_code == 200, res.data[:500]
        assert keys(body(res)) == {*(f"Patient/{r}" for r in MAYA_RECORDS), "Flag/flag-cp"}
        assert client.get("/fhir/Patient/maya-master/$everything").status_code == 401
        summary = client.get("/fhir/Patient/maya-master/$family-summary", headers=narrow)
        assert summary.status_code == 200 and "obs-da-maya" not in summary.get_data(as_text=True)
    finally:
        outer.rollback()
        conn.close()


# -- pure ---------------------------------------------------------------------------------------------

def test_link_groups_join_records_linked_either_way():
    base = "http://x/fhir"
    patients = {"m": {"link": [{"other": ref("Patient/a")}, {"other": ref(f"{base}/Patient/b")}]},
                "a": {}, "b": {"link": [{"other": ref("Patient/m/_history/2")}]},
                "c": {"link": [{"other": ref("Patient/d")}]}, "e": {"link": [{"other": ref("RelatedPerson/a")}]}}
    assert link_targets(patients["m"], base) == ["a", "b"]
    assert link_groups(patients, base) == [{"a", "b", "m"}, {"c"}, {"e"}]


def test_keyset_pages_do_not_shift_when_an_entry_disappears():
    found = [Found(pk, "Observation", f"o{pk}", {}) for pk in range(1, 11)]
    keyed = [(sort_key(f, ("p",)), f) for f in found]
    first = page_after(keyed, 4, None)
    assert [f.pk for f in first.entries] == [1, 2, 3, 4] and first.has_next and not first.has_previous
    del keyed[1]  # o2 deleted after the first page was served
    second = page_after(keyed, 4, first.next_cursor)
    assert [f.pk for f in second.entries] == [5, 6, 7, 8]
    assert parse_cursor("2.Observation.4") == first.next_cursor
    with pytest.raises(Exception):
        parse_cursor("2.Observation")


def test_an_import_provenance_shows_only_this_childs_targets(client):
    """One import Provenance covers a whole file; $everything must not list other children's records."""
    from pathlib import Path

    fixture = Path(__file__).parent.parent / "mappings" / "fixtures" / "police" / "notifications.csv"
    res = client.post("/fhir/$import-agency-data?format=police-notifications-csv", data=fixture.read_bytes(),
                      content_type="text/csv")
    assert res.status_code == 200, res.data
    provenance = client.get("/fhir/Provenance").get_json()["entry"][0]["resource"]
    patients = [t["reference"] for t in provenance["target"] if t["reference"].startswith("Patient/")]
    assert len(patients) >= 2
    child = patients[0]
    bundle = client.get(f"/fhir/{child}/$everything").get_json()
    shown = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    assert shown, "the import Provenance is part of the child's record"
    members = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    for prov in shown:
        assert all(t["reference"] in members for t in prov["target"])
        assert patients[1] not in [t["reference"] for t in prov["target"]]
        assert any(tag.get("code") == "SUBSETTED" for tag in prov["meta"]["tag"])
