"""Household evidence for a family that moved (linkage/household.py), linked on write in load order
over the in-memory store, and the guards that keep different children apart."""
from __future__ import annotations

from linkage.linker import Matcher
from linkage.memory import MemoryStore
from linkage.model import CERTAIN, Model

from .test_model import person

OLD, NEW = "M40 6WP", "B8 5BA"
UPN = "https://w3id.org/sg-fhir/Id/upn"


def _model() -> Model:
    return Model.load()


def _link_in_order(*records) -> MemoryStore:
    store = MemoryStore()
    for record in records:
        store.add(record)
        Matcher(_model(), store).decide(record)
    return store


def _together(store: MemoryStore, a: str, b: str) -> bool:
    return store.master_of.get(a) is not None and store.master_of.get(a) == store.master_of.get(b)


def _moved_family() -> list:
    """Two siblings known to health at the old address and to a school at the new one; no identifier
    is shared across the agencies (health has NHS numbers, the school UPNs)."""
    return [
        person("gp-amara", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919"),
        person("gp-chidi", "Chidi", "Okafor", "2012-07-21", gender="male", postcode=OLD, nhs="9434765870"),
        person("school-amara", "Amara", "Okafor", "2015-03-04", postcode=NEW, ids=((UPN, "A330200214002"),)),
        person("school-chidi", "Chidi", "Okafor", "2012-07-21", gender="male", postcode=NEW,
               ids=((UPN, "A330200211007"),)),
    ]


def test_siblings_showing_the_same_move_link_both_children():
    store = _link_in_order(*_moved_family())
    assert _together(store, "gp-amara", "school-amara")
    # the first sibling went to review when it arrived; the second one's link brings it in too, and
    # answers that review
    assert _together(store, "gp-chidi", "school-chidi")
    assert frozenset(("gp-amara", "school-amara")) in store.reviews
    assert store.closed_reviews == {frozenset(("gp-amara", "school-amara"))}
    assert not _together(store, "gp-amara", "gp-chidi")
    assert len(store.clusters) == 2


def test_the_match_says_why_it_is_certain():
    store = MemoryStore(_moved_family()[:3])
    store.add(_moved_family()[3])
    matches = Matcher(_model(), store).match(_moved_family()[3])
    best = matches[0]
    assert best.record.id == "gp-chidi" and best.score.grade == CERTAIN
    assert best.score.household == ("school-amara", "gp-amara") or best.score.household == ("gp-amara",
                                                                                             "school-amara")
    assert "household moved" in best.score.reason


def test_an_only_child_who_moved_still_goes_to_review():
    store = _link_in_order(_moved_family()[0], _moved_family()[2])
    assert not store.clusters
    assert frozenset(("gp-amara", "school-amara")) in store.reviews


def test_same_name_and_birthday_at_different_addresses_with_households_stay_apart():
    """The wrong-merge guard with households around: two different Amara Okafors born the same day,
    each with a sibling whose records are at that child's own address only."""
    store = _link_in_order(
        person("a-gp", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919"),
        person("a-sibling-gp", "Chidi", "Okafor", "2012-07-21", gender="male", postcode=OLD, nhs="9434765870"),
        person("a-sibling-school", "Chidi", "Okafor", "2012-07-21", gender="male", postcode=OLD,
               ids=((UPN, "A330200211007"),)),
        person("b-school", "Amara", "Okafor", "2015-03-04", postcode=NEW, ids=((UPN, "B352200214002"),)),
        person("b-sibling-school", "Ngozi", "Okafor", "2017-01-30", postcode=NEW, ids=((UPN, "B352200217003"),)),
    )
    assert not _together(store, "a-gp", "b-school")
    assert all(len({m.split("-")[0] for m in members}) == 1 for members in store.clusters.values())


def test_a_childs_own_second_record_does_not_corroborate_its_move():
    """The GP and the hospital both hold the child at the old address: that is one person, not a
    household, so the school record at the new address is still put to review."""
    store = _link_in_order(
        person("gp", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919"),
        person("ed", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919",
               ids=(("https://w3id.org/sg-fhir/Id/RXK/hospital-number", "K0000001"),)),
        person("school", "Amara", "Okafor", "2015-03-04", postcode=NEW, ids=((UPN, "A330200214002"),)),
    )
    assert _together(store, "gp", "ed")
    assert not _together(store, "gp", "school")


def test_twins_who_moved_are_each_linked_to_themselves_only():
    store = _link_in_order(
        person("gp-amara", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919"),
        person("gp-adaeze", "Adaeze", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765870"),
        person("school-amara", "Amara", "Okafor", "2015-03-04", postcode=NEW, ids=((UPN, "A330200214002"),)),
        person("school-adaeze", "Adaeze", "Okafor", "2015-03-04", postcode=NEW, ids=((UPN, "A330200214003"),)),
    )
    assert _together(store, "gp-amara", "school-amara")
    assert _together(store, "gp-adaeze", "school-adaeze")
    assert not _together(store, "gp-amara", "gp-adaeze")


def test_a_pair_a_practitioner_rejected_is_not_joined_by_a_sibling():
    family = _moved_family()
    store = MemoryStore()
    store.not_same.add(frozenset(("gp-amara", "school-amara")))
    for record in (family[0], family[2], family[1], family[3]):
        store.add(record)
        Matcher(_model(), store).decide(record)
    assert _together(store, "gp-chidi", "school-chidi")
    assert not _together(store, "gp-amara", "school-amara")
    # nor does the rejected pair become certain when its own record arrives again (an update)
    store.add(family[0])
    Matcher(_model(), store).decide(family[0])
    assert not _together(store, "gp-amara", "school-amara")


def test_linking_on_write_links_a_moved_family_through_http(client, drain):
    """The same rule on the FHIR database: the siblings' records are found by address-postalcode,
    both children get a master, and the Provenance says the household's move made it certain."""
    from tests.functional.test_crud import body

    from .conftest import NHS as NHS_SYSTEM, agency_patient

    def create(resource):
        response = client.post("/fhir/Patient", json=resource)
        assert response.status_code == 201, response.data
        return body(response)["id"]

    gp_amara = create(agency_patient("health/QHL", "Amara", "Okafor", "2015-03-04", postcode=OLD,
                                     identifiers=[(NHS_SYSTEM, "9434765919")]))
    school_amara = create(agency_patient("education/352", "Amara", "Okafor", "2015-03-04", postcode=NEW,
                                         identifiers=[(UPN, "A330200214002")]))
    drain()
    master_tag = "https://w3id.org/sg-fhir/CodeSystem/linkage|master"
    assert body(client.get(f"/fhir/Patient?_tag={master_tag}")).get("total") == 0  # an only child: review
    gp_chidi = create(agency_patient("health/QHL", "Chidi", "Okafor", "2012-07-21", gender="male", postcode=OLD,
                                     identifiers=[(NHS_SYSTEM, "9434765870")]))
    school_chidi = create(agency_patient("education/352", "Chidi", "Okafor", "2012-07-21", gender="male",
                                         postcode=NEW, identifiers=[(UPN, "A330200211007")]))
    drain()
    masters = [e["resource"] for e in body(client.get(f"/fhir/Patient?_tag={master_tag}"))["entry"]]
    linked = sorted(sorted(link["other"]["reference"].split("/")[1] for link in m["link"]) for m in masters)
    assert linked == sorted([sorted([gp_amara, school_amara]), sorted([gp_chidi, school_chidi])])
    reasons = [p["resource"]["reason"][0]["text"] for p in body(client.get("/fhir/Provenance?_count=50"))["entry"]
               if p["resource"]["activity"]["coding"][0]["code"] == "auto-link"]
    assert any("household moved" in r for r in reasons)
    assert any("corroborates the household's move" in r for r in reasons)
    # Amara's pair had been put to review; the link that brought it in completed that Task
    tasks = [e["resource"] for e in body(client.get("/fhir/Task?code=https://w3id.org/sg-fhir/CodeSystem/"
                                                    "linkage|link-review"))["entry"]]
    amara = [t for t in tasks if {t["for"]["reference"], t["focus"]["reference"]} ==
             {f"Patient/{gp_amara}", f"Patient/{school_amara}"}]
    assert len(amara) == 1 and amara[0]["status"] == "completed"
    assert amara[0]["businessStatus"]["text"] == "linked" and amara[0]["output"][0]["valueReference"]["reference"] \
        in {f"Patient/{m['id']}" for m in masters}
    # $match answers the same: the school record of Chidi is a certain match for his GP record
    answer = body(client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": agency_patient("education/352", "Chidi", "Okafor", "2012-07-21",
                                                        gender="male", postcode=NEW)},
        {"name": "onlyCertainMatches", "valueBoolean": True}]}))
    assert {e["resource"]["id"] for e in answer["entry"] if e["search"]["mode"] == "match"} >= {gp_chidi}


def test_a_record_certain_with_two_children_never_merges_them():
    """Transitive closure stops at a cluster-level conflict: a record sharing a UPN with one child's
    cluster and a police id with another's joins one of them; the clusters, whose members hold two
    different valid NHS numbers, are not merged, and the other goes to review."""
    police = "https://w3id.org/sg-fhir/Id/06/person"
    store = _link_in_order(
        person("gp-1", "Amara", "Okafor", "2015-03-04", postcode=OLD, nhs="9434765919"),
        person("school-1", "Amara", "Okafor", "2015-03-04", postcode=OLD, ids=((UPN, "A330200214002"),)),
        person("gp-2", "Amara", "Okafor", "2015-03-04", postcode=NEW, nhs="9434765870"),
        person("police-2", "Amara", "Okafor", "2015-03-04", postcode=NEW, ids=((police, "GMP1"),)),
        person("mixed", "Amara", "Okafor", "2015-03-04", ids=((UPN, "A330200214002"), (police, "GMP1"))),
    )
    assert _together(store, "gp-1", "school-1") and _together(store, "gp-2", "police-2")
    assert not _together(store, "gp-1", "gp-2")
    assert any(pair & {"mixed"} for pair in store.reviews)
