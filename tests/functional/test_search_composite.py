"""Composite search parameters (search.html#composite) and ``near`` (location.html#positional)
through the HTTP API, on SQLite and PostgreSQL: same-instance matching, prefixes, escaping, OR/AND,
:missing, strict 400s for malformed values, distances either side of the limit, reindex."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import delete

from fhir_server import create_app
from fhir_server.cli import main
from fhir_server.config import Settings
from fhir_server.storage.tables import idx_composite, idx_geo

from .test_cli import PROFILES, migrated_database_url  # noqa: F401 - fixture
from .test_crud import body, post
from tests.integration.test_migrations import empty_database_url, scratch_postgres_url  # noqa: F401 - fixtures

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SYSTOLIC, DIASTOLIC, BP_PANEL = "8480-6", "8462-4", "85354-9"


def ids(bundle):
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def search(client, query: str, *, strict: bool = False):
    headers = {"Prefer": "handling=strict"} if strict else {}
    return client.get(f"/fhir/{query}", headers=headers)


def found(client, query: str) -> list[str]:
    res = search(client, query, strict=True)
    assert res.status_code == 200, res.get_data(as_text=True)
    return ids(body(res))


def _coding(code: str, system: str = LOINC):
    return {"coding": [{"system": system, "code": code}]}


def _quantity(value, unit="mm[Hg]"):
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": unit}


def blood_pressure(systolic, diastolic) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": _coding(BP_PANEL),
            "component": [{"code": _coding(SYSTOLIC), "valueQuantity": _quantity(systolic)},
                          {"code": _coding(DIASTOLIC), "valueQuantity": _quantity(diastolic)}]}


def simple(code: str, **value) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": _coding(code), **value}


def created(client, resource) -> str:
    res = post(client, resource)
    assert res.status_code == 201, res.get_data(as_text=True)
    return body(res)["id"]


# -- composite -------------------------------------------------------------------------------------

def test_component_code_value_quantity_matches_on_the_same_component_only(client):
    high = created(client, blood_pressure(150, 95))
    low = created(client, blood_pressure(115, 75))
    q = "Observation?component-code-value-quantity="
    assert found(client, q + quote(f"{LOINC}|{SYSTOLIC}$gt140")) == [high]
    assert found(client, q + quote(f"{LOINC}|{SYSTOLIC}$lt120")) == [low]
    # 95 is a diastolic value: the systolic code with it must not match (different components).
    assert found(client, q + quote(f"{LOINC}|{SYSTOLIC}$95")) == []
    assert found(client, q + quote(f"{LOINC}|{DIASTOLIC}$95")) == [high]
    # number precision: 150 means [149.5, 150.5); with units
    assert found(client, q + quote(f"{SYSTOLIC}$150|{UCUM}|mm[Hg]")) == [high]
    assert found(client, q + quote(f"{SYSTOLIC}$150|{UCUM}|kg")) == []
    assert found(client, q + quote(f"{SYSTOLIC}$ge115.0,{DIASTOLIC}$ge95")) == sorted([high, low])  # OR
    assert found(client, q + quote(f"{SYSTOLIC}$gt100") + "&" + q.split("?")[1] + quote(f"{DIASTOLIC}$lt80")) == [low]
    # the panel's own code has no value: not a match through the component parameter
    assert found(client, q + quote(f"{BP_PANEL}$gt0")) == []


def test_code_value_and_combo_parameters(client):
    weight = created(client, simple("29463-7", valueQuantity=_quantity(70, "kg")))
    smoker = created(client, simple("72166-2", valueCodeableConcept=_coding("449868002", "http://snomed.info/sct")))
    onset = created(client, simple("11368-8", valueDateTime="2024-03-15"))
    note = created(client, simple("8251-1", valueString="Lives with grandmother, Mrs O'Brien"))
    bp = created(client, blood_pressure(132, 84))
    assert found(client, "Observation?code-value-quantity=" + quote(f"{LOINC}|29463-7$gt69|{UCUM}|kg")) == [weight]
    assert found(client, "Observation?code-value-quantity=" + quote(f"{LOINC}|29463-7$lt69")) == []
    assert found(client, "Observation?code-value-concept=" + quote("72166-2$http://snomed.info/sct|449868002")) == [smoker]
    assert found(client, "Observation?code-value-concept=" + quote("72166-2$|449868002")) == []  # has a system
    assert found(client, "Observation?code-value-date=11368-8$ge2024-03") == [onset]
    assert found(client, "Observation?code-value-date=11368-8$lt2024-03-15") == []
    assert found(client, "Observation?code-value-string=8251-1$lives") == [note]
    assert found(client, "Observation?code-value-string=8251-1$grandmother") == []  # string: starts-with
    # code-value-quantity reads Observation.value only; combo also reads the components
    assert found(client, "Observation?code-value-quantity=" + quote(f"{SYSTOLIC}$132")) == []
    assert found(client, "Observation?combo-code-value-quantity=" + quote(f"{SYSTOLIC}$132")) == [bp]
    assert found(client, "Observation?combo-code-value-quantity=" + quote(f"29463-7$70")) == [weight]
    assert found(client, "Observation?combo-code-value-quantity=" + quote(f"{SYSTOLIC}$84")) == []
    assert found(client, "Observation?combo-code-value-concept=" + quote("72166-2$449868002")) == [smoker]


def test_component_code_value_concept_and_group_characteristic(client):
    obs = {"resourceType": "Observation", "status": "final", "code": _coding("social-history"),
           "component": [{"code": _coding("a"), "valueCodeableConcept": _coding("yes")},
                         {"code": _coding("b"), "valueCodeableConcept": _coding("no")}]}
    oid = created(client, obs)
    assert found(client, "Observation?component-code-value-concept=a$yes") == [oid]
    assert found(client, "Observation?component-code-value-concept=a$no") == []
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "characteristic": [{"code": _coding("looked-after"), "valueBoolean": True, "exclude": False},
                                {"code": _coding("send"), "valueCodeableConcept": _coding("ehcp"), "exclude": False}]}
    gid = created(client, group)
    assert found(client, "Group?characteristic-value=looked-after$true") == [gid]
    assert found(client, "Group?characteristic-value=looked-after$false") == []
    assert found(client, "Group?characteristic-value=send$ehcp") == [gid]
    assert found(client, "Group?characteristic-value=send$true") == []


def test_escaped_separators_in_component_values(client):
    # A code holding '$', ',' and '|' is found only with those characters escaped (search.html#escaping).
    odd = created(client, simple("a$b,c|d", valueQuantity=_quantity(5)))
    plain = created(client, simple("a", valueQuantity=_quantity(5)))
    assert found(client, "Observation?code-value-quantity=" + quote(r"a\$b\,c\|d$5")) == [odd]
    assert found(client, "Observation?code-value-quantity=" + quote("a$5")) == [plain]


def test_missing_modifier_and_and_with_other_parameters(client):
    with_value = created(client, simple("29463-7", valueQuantity=_quantity(70, "kg")))
    without = created(client, simple("29463-7"))
    assert found(client, "Observation?code-value-quantity:missing=true&code=29463-7") == [without]
    assert found(client, "Observation?code-value-quantity:missing=false&code=29463-7") == [with_value]
    assert found(client, "Observation?code-value-quantity=29463-7$70&status=final") == [with_value]


def test_updates_and_deletes_rewrite_the_composite_rows(client):
    oid = created(client, simple("29463-7", valueQuantity=_quantity(70, "kg")))
    current = body(client.get(f"/fhir/Observation/{oid}"))
    current["valueQuantity"] = _quantity(90, "kg")
    assert client.put(f"/fhir/Observation/{oid}", json=current).status_code == 200
    assert found(client, "Observation?code-value-quantity=29463-7$70") == []
    assert found(client, "Observation?code-value-quantity=29463-7$90") == [oid]
    client.delete(f"/fhir/Observation/{oid}")
    assert found(client, "Observation?code-value-quantity=29463-7$90") == []


def test_three_component_and_reference_component_parameters(client):
    seq = {"resourceType": "MolecularSequence", "type": "dna", "coordinateSystem": 1,
           "referenceSeq": {"chromosome": _coding("1", "http://terminology.hl7.org/CodeSystem/chromosome-human"),
                            "windowStart": 100, "windowEnd": 500},
           "variant": [{"start": 120, "end": 130}, {"start": 300, "end": 310}]}
    sid = created(client, seq)
    assert found(client, "MolecularSequence?chromosome-variant-coordinate=1$ge300$le310") == [sid]
    # start from one variant and end from the other: no single variant spans 120..310
    assert found(client, "MolecularSequence?chromosome-variant-coordinate=1$le120$ge310") == []
    assert found(client, "MolecularSequence?chromosome-window-coordinate=1$100$500") == [sid]
    target = created(client, {"resourceType": "DocumentReference", "status": "current",
                              "content": [{"attachment": {"contentType": "text/plain"}}]})
    doc = created(client, {"resourceType": "DocumentReference", "status": "current",
                           "content": [{"attachment": {"contentType": "text/plain"}}],
                           "relatesTo": [{"code": "replaces", "target": {"reference": f"DocumentReference/{target}"}}]})
    assert found(client, f"DocumentReference?relationship=DocumentReference/{target}$replaces") == [doc]
    assert found(client, f"DocumentReference?relationship=DocumentReference/{target}$appends") == []


def test_composites_in_reverse_chains_and_conditional_create(client):
    patient = created(client, {"resourceType": "Patient", "name": [{"family": "Composite"}]})
    other = created(client, {"resourceType": "Patient", "name": [{"family": "Other"}]})
    created(client, dict(blood_pressure(160, 100), subject={"reference": f"Patient/{patient}"}))
    created(client, dict(blood_pressure(110, 70), subject={"reference": f"Patient/{other}"}))
    has = "Patient?_has:Observation:subject:component-code-value-quantity=" + quote(f"{SYSTOLIC}$gt150")
    assert found(client, has) == [patient]
    enc = created(client, {"resourceType": "Encounter", "status": "finished",
                           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                           "location": [{"location": {"reference": "Location/" + created(
                               client, location("clinic", 51.5, -0.12))}}]})
    assert found(client, "Encounter?location.near=" + quote("51.5|-0.12|1")) == [enc]
    assert found(client, "Encounter?location.near=" + quote("52.5|-0.12|1")) == []
    # conditional create matches through a composite parameter (strict parsing)
    again = post(client, blood_pressure(160, 100),
                 **{"If-None-Exist": "component-code-value-quantity=" + quote(f"{SYSTOLIC}$160")})
    assert again.status_code == 200


def test_transaction_bundle_creates_are_indexed_too(client):
    """Plain creates in a transaction go through the bulk writer (COPY on PostgreSQL)."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": blood_pressure(171, 99), "request": {"method": "POST", "url": "Observation"}},
        {"resource": location("bundled", 54.0, -2.0), "request": {"method": "POST", "url": "Location"}}]}
    res = client.post("/fhir", json=bundle)
    assert res.status_code == 200, res.get_data(as_text=True)
    oid, lid = (e["response"]["location"].split("/_history")[0].rsplit("/", 1)[1] for e in body(res)["entry"])
    assert found(client, "Observation?component-code-value-quantity=" + quote(f"{SYSTOLIC}$171")) == [oid]
    assert found(client, "Location?near=" + quote("54.0|-2.0|0.1")) == [lid]


@pytest.mark.parametrize("query", [
    "Observation?code-value-quantity=29463-7",  # one component short
    "Observation?code-value-quantity=29463-7$70$kg",  # one too many
    "Observation?code-value-quantity=29463-7$",  # empty component
    "Observation?code-value-quantity=29463-7$heavy",  # not a number
    "Observation?code-value-quantity=29463-7$gt70|a|b|c",  # malformed quantity
    "Observation?code-value-date=11368-8$2024-13-45",  # not a date
    "Observation?code-value-quantity:exact=29463-7$70",  # modifier other than :missing
    "Observation?code-value-quantity:missing=maybe",
    "Observation?code-value-quantity.code=x",  # not a reference: no chain
])
def test_malformed_composite_values_are_400(client, query):
    res = search(client, query)
    assert res.status_code == 400, res.get_data(as_text=True)
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0].startswith("code-value-")


def test_capability_statement_lists_composites_and_near(client):
    statement = body(client.get("/fhir/metadata"))
    by_type = {r["type"]: {p["name"]: p["type"] for p in r.get("searchParam", [])}
               for r in statement["rest"][0]["resource"]}
    for code in ("code-value-quantity", "code-value-concept", "code-value-date", "code-value-string",
                 "combo-code-value-quantity", "combo-code-value-concept", "component-code-value-quantity",
                 "component-code-value-concept"):
        assert by_type["Observation"][code] == "composite"
    assert by_type["Group"]["characteristic-value"] == "composite"
    assert by_type["Location"]["near"] == "special"


# -- near ------------------------------------------------------------------------------------------

def location(name: str, lat: float, lon: float) -> dict:
    return {"resourceType": "Location", "name": name, "position": {"latitude": lat, "longitude": lon}}


def test_near_finds_locations_within_the_great_circle_distance(client):
    # Great-circle distances from Trafalgar Square (51.50809, -0.12806): Big Ben 0.852 km, Greenwich
    # 9.483 km, Oxford 82.555 km (51.297 international miles), Manchester 261.7 km.
    places = {name: created(client, location(name, lat, lon)) for name, lat, lon in (
        ("big-ben", 51.50073, -0.12463), ("greenwich", 51.47693, -0.00055), ("oxford", 51.75202, -1.25773),
        ("manchester", 53.48095, -2.23743))}
    created(client, {"resourceType": "Location", "name": "no position"})
    here = "51.50809|-0.12806"

    def near(value: str) -> list[str]:
        return found(client, "Location?near=" + quote(value))

    assert near(f"{here}|1|km") == [places["big-ben"]]
    assert near(f"{here}|0.84|km") == []  # just short of Big Ben
    assert near(f"{here}|860|m") == [places["big-ben"]]
    assert near(f"{here}|9.45") == [places["big-ben"]]  # km by default; Greenwich just outside
    assert near(f"{here}|9.5") == sorted([places["big-ben"], places["greenwich"]])
    assert near(f"{here}|82.5|km") == sorted([places["big-ben"], places["greenwich"]])
    assert near(f"{here}|82.6|km") == sorted([places["big-ben"], places["greenwich"], places["oxford"]])
    assert near(f"{here}|51.31|[mi_i]") == sorted([places["big-ben"], places["greenwich"], places["oxford"]])
    assert near(f"{here}|51.28|[mi_i]") == sorted([places["big-ben"], places["greenwich"]])
    assert near(here) == [places["big-ben"]]  # the server's default distance, 5 km
    # OR of two points; AND with another parameter
    assert near(f"53.48|-2.24|1,{here}|1") == sorted([places["big-ben"], places["manchester"]])
    assert found(client, "Location?name=oxford&near=" + quote(f"{here}|100")) == [places["oxford"]]
    assert found(client, "Location?near:missing=true") != []


def test_near_across_the_antimeridian_and_near_a_pole(client):
    east = created(client, location("east", -17.0, 179.9))
    west = created(client, location("west", -17.0, -179.9))
    pole = created(client, location("pole", 89.99, 45.0))
    near_pole = created(client, location("near pole", 89.98, -135.0))  # 3.34 km from `pole`, over the pole
    # From (-17, 179.95): east 5.3 km, west 15.9 km (across the antimeridian), and the mirror image.
    assert found(client, "Location?near=" + quote("-17.0|179.95|6")) == [east]
    assert found(client, "Location?near=" + quote("-17.0|179.95|16")) == sorted([east, west])
    assert found(client, "Location?near=" + quote("-17.0|-179.95|6")) == [west]
    assert found(client, "Location?near=" + quote("-17.0|-179.95|16")) == sorted([east, west])
    assert found(client, "Location?near=" + quote("89.99|45.0|3.4")) == sorted([pole, near_pole])
    assert found(client, "Location?near=" + quote("89.99|45.0|3.3")) == [pole]


@pytest.mark.parametrize("value", [
    "51.5", "91|0|1", "51.5|181|1", "north|0|1", "51.5|0|-1", "51.5|0|1|furlongs", "51.5|0|1|km|extra",
    "51.5|0|NaN",
])
def test_malformed_near_values_are_400(client, value):
    res = search(client, "Location?near=" + quote(value))
    assert res.status_code == 400, res.get_data(as_text=True)
    assert body(res)["issue"][0]["expression"] == ["near"]


# -- reindex ---------------------------------------------------------------------------------------

def test_reindex_rebuilds_composite_and_geo_rows(migrated_database_url: str, capsys) -> None:  # noqa: F811
    settings = Settings(database_url=migrated_database_url, base_url="http://localhost/fhir", profiles_dir=PROFILES,
                        auth_enabled=False)
    app = create_app(settings)
    client = app.test_client()
    try:
        oid = created(client, blood_pressure(150, 95))
        lid = created(client, location("here", 51.5, -0.12))
        query = "Observation?component-code-value-quantity=" + quote(f"{SYSTOLIC}$150")
        assert found(client, query) == [oid]
        with app.extensions["fhir"].engine.begin() as conn:
            conn.execute(delete(idx_composite))
            conn.execute(delete(idx_geo))
        assert found(client, query) == []
        assert found(client, "Location?near=51.5|-0.12|1") == []
        assert main(["reindex"]) == 0
        capsys.readouterr()
        assert found(client, query) == [oid]
        assert found(client, "Location?near=51.5|-0.12|1") == [lid]
    finally:
        app.extensions["fhir"].engine.dispose()
