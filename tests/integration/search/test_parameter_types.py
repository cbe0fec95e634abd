"""Every search parameter type, modifier and prefix (R4 search.html#ptypes) against SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime

import pytest

from fhir_server.errors import BadRequest

from .conftest import LOINC, NHS, UCUM, V2_0203, Store


def ids(store: Store, rtype: str | None, query: str) -> list[str]:
    return sorted(store.ids(rtype, query))


# -- token -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    (f"code={LOINC}|1234-5", ["obs1", "obs2"]),
    ("code=1234-5", ["obs1", "obs2"]),
    ("code=|nosys", ["obs4"]),
    ("code=|1234-5", []),
    (f"code={LOINC}|", ["obs1", "obs2", "obs5"]),
    ("code=1234-5,999", ["obs1", "obs2", "obs3"]),
    ("code:not=1234-5", ["obs3", "obs4", "obs5"]),
    ("code:text=gluc", ["obs1"]),
    ("code:text=BLOOD", ["obs2"]),
    ("status=final&code=1234-5", ["obs1"]),
    ("status=final,amended", ["obs1", "obs3", "obs4", "obs5"]),
])
def test_token(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Observation", query) == expected


def test_token_identifier_of_type_and_boolean(data: Store) -> None:
    assert ids(data, "Patient", f"identifier={NHS}|9434765919") == ["p1"]
    assert ids(data, "Patient", "identifier=A-1") == ["p2"]
    assert ids(data, "Patient", f"identifier:of-type={V2_0203}|MR|9434765919") == ["p1"]
    assert ids(data, "Patient", f"identifier:of-type={V2_0203}|MR|A-1") == []
    assert ids(data, "Patient", "identifier:text=medical rec") == ["p1"]
    data.put({"resourceType": "Patient", "id": "accent",
              "identifier": [{"value": "1", "type": {"text": "Numéro"}}]})
    assert ids(data, "Patient", "identifier:text=numéro") == ["accent"]
    assert ids(data, "Patient", "active=true") == ["p1"]
    assert ids(data, "Patient", "gender=male,female") == ["p1", "p2"]


# -- string ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("name=peter", ["p1"]),
    ("name=PET", ["p1"]),
    ("name=ter", []),
    ("name:contains=ter", ["p1"]),
    ("family=muller", ["p2"]),
    ("name=elodie", ["p2"]),
    ("family:exact=Müller", ["p2"]),
    ("family:exact=müller", []),
    ("family:exact=Mull", []),
    ("name=jon,chal", ["p1", "p3"]),
    ("name=chalmers&name=james", ["p1"]),
    ("name=chalmers&name=anna", []),
    ("name:contains=%", []),
    ("name:contains=_", []),
])
def test_string(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Patient", query) == expected


# -- date ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    # obs1 = 2020-01-15T10:00Z (instant); obs2 = [2020-01-01, 2020-02-01]; obs3 = 2021-06-01 (a day)
    ("date=2020-01-15", ["obs1"]),
    ("date=2020-01", ["obs1"]),
    ("date=2020", ["obs1", "obs2"]),
    ("date=eq2021-06-01", ["obs3"]),
    ("date=2021-06-01T12:00:00Z", []),
    ("date=ne2020", ["obs3"]),
    ("date=gt2020-01-20", ["obs2", "obs3"]),
    ("date=ge2020-01-15", ["obs1", "obs2", "obs3"]),
    ("date=lt2020-01-15", ["obs2"]),
    ("date=le2020-01-15", ["obs1", "obs2"]),
    ("date=sa2020-01-14", ["obs1", "obs3"]),
    ("date=eb2020-03", ["obs1", "obs2"]),
    ("date=ap2020-01-16", ["obs1", "obs2"]),
    ("date=ge2020-01-10&date=lt2020-01-20", ["obs1", "obs2"]),
    ("date=sa2020-01-09&date=eb2020-02", ["obs1"]),
    ("date=2020-01-15,2021", ["obs1", "obs3"]),
])
def test_date(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Observation", query) == expected


def test_date_of_day_precision_and_open_ranges(data: Store) -> None:
    assert ids(data, "Patient", "birthdate=1974-12-25") == ["p1"]
    assert ids(data, "Patient", "birthdate=1980") == ["p2"]
    assert ids(data, "Patient", "birthdate=1980-02-10") == []  # a month is not within one day
    assert ids(data, "Patient", "birthdate=ap1980-02-10") == ["p2"]
    data.put({"resourceType": "Observation", "id": "open", "status": "final", "code": {"text": "x"},
              "effectivePeriod": {"start": "2022-01-01T00:00:00Z"}})
    assert "open" in ids(data, "Observation", "date=gt2030")  # no end: unbounded above
    assert "open" not in ids(data, "Observation", "date=lt2021")
    assert "open" not in ids(data, "Observation", "date=2022")


def test_invalid_date_is_a_400(data: Store) -> None:
    with pytest.raises(BadRequest) as err:
        data.search("Observation", "date=2020-13")
    assert err.value.issues[0].expression == ("date",)


# -- number and quantity -----------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("probability=0.5", ["ra1"]),
    ("probability=0.50", ["ra1"]),
    ("probability=0.54", []),
    ("probability=1e2", ["ra2"]),
    ("probability=100", ["ra2"]),
    ("probability=100.4", []),
    ("probability=gt0.5", ["ra2"]),
    ("probability=ge0.5", ["ra1", "ra2"]),
    ("probability=lt100", ["ra1"]),
    ("probability=le100", ["ra1", "ra2"]),
    ("probability=ne0.5", ["ra2"]),
    ("probability=ap95", ["ra2"]),
])
def test_number(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "RiskAssessment", query) == expected


@pytest.mark.parametrize("query,expected", [
    (f"value-quantity=5.4|{UCUM}|mg", ["obs1"]),
    ("value-quantity=5.4", ["obs1"]),
    ("value-quantity=5.4||mg", ["obs1"]),
    (f"value-quantity=5.4|{UCUM}|g", []),
    ("value-quantity=gt5|http://other|mg", []),
    (f"value-quantity=gt5|{UCUM}|mg", ["obs1", "obs2"]),
    ("value-quantity=7||mmol/L", ["obs3"]),
    ("value-quantity=lt10", ["obs1", "obs3"]),
    ("value-quantity=ge100||mg", ["obs2"]),
])
def test_quantity(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Observation", query) == expected


# -- reference ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("subject=Patient/p1", ["obs1", "obs3"]),
    ("subject=p1", ["obs1", "obs3"]),
    ("subject:Patient=p2", ["obs2"]),
    ("subject=Patient/p1,Patient/p2", ["obs1", "obs2", "obs3"]),
    ("subject=http://localhost/fhir/Patient/p1", ["obs1", "obs3"]),
    ("subject=http://other.org/fhir/Patient/77", ["obs5"]),
    ("subject=Group/p1", []),
    (f"subject:identifier={NHS}|9434765919", ["obs4"]),
    ("patient=Patient/p1", ["obs1", "obs3"]),
])
def test_reference(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "Observation", query) == expected


# -- uri ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("url=http://acme.org/fhir/ValueSet/123", ["vs1"]),
    ("url=http://acme.org/fhir/ValueSet", []),
    ("url:below=http://acme.org/fhir", ["vs1"]),
    ("url:below=http://acme.org/", ["vs1", "vs2"]),
    ("url:below=HTTP://ACME.ORG/", []),
    ("url:above=http://acme.org/fhir/ValueSet/123/_history/5", ["vs1"]),
    ("url:above=http://acme.org/other/ValueSet/9", ["vs2"]),
])
def test_uri(data: Store, query: str, expected: list[str]) -> None:
    assert ids(data, "ValueSet", query) == expected


# -- :missing, _id, _lastUpdated, meta parameters ------------------------------------------------------

def test_missing_on_every_type(data: Store) -> None:
    assert ids(data, "Patient", "birthdate:missing=true") == ["p3"]
    assert ids(data, "Patient", "birthdate:missing=false") == ["p1", "p2"]
    assert ids(data, "Patient", "name:missing=false") == ["p1", "p2", "p3"]
    assert ids(data, "Patient", "identifier:missing=true") == ["p3"]
    assert ids(data, "Patient", "organization:missing=false") == ["p1"]
    assert ids(data, "Observation", "value-quantity:missing=true") == ["obs4", "obs5"]
    assert ids(data, "RiskAssessment", "probability:missing=false") == ["ra1", "ra2"]
    assert ids(data, "ValueSet", "url:missing=true") == []


def test_id_and_last_updated_come_from_resource_columns(data: Store) -> None:
    assert ids(data, "Patient", "_id=p1,p3") == ["p1", "p3"]
    assert ids(data, "Patient", "_id:not=p1") == ["p2", "p3"]
    assert ids(data, "Patient", "_id=p-deleted") == []
    data.put({"resourceType": "Patient", "id": "old"}, last_updated=datetime(2019, 5, 1, 12))
    assert ids(data, "Patient", "_lastUpdated=2019-05") == ["old"]
    assert ids(data, "Patient", "_lastUpdated=lt2020") == ["old"]
    assert ids(data, "Patient", "_lastUpdated=gt2023&_id=old,p1") == ["p1"]
    assert ids(data, "Patient", "_lastUpdated=2019-05-01T12:00:00Z") == ["old"]


def test_meta_parameters_use_index_rows(data: Store) -> None:
    assert ids(data, "Patient", "_tag=http://example.org/tags|vip") == ["p1"]
    assert ids(data, "Patient", "_tag:not=vip") == ["p2", "p3"]
    assert ids(data, "Patient", "_profile=http://example.org/StructureDefinition/child") == ["p1"]


def test_deleted_resources_never_match(data: Store) -> None:
    assert ids(data, "Patient", "family=chalmers") == ["p1"]
    assert "p-deleted" not in ids(data, None, "")


def test_whole_system_search(data: Store) -> None:
    assert ids(data, None, "_id=p1,obs1,o1") == ["o1", "obs1", "p1"]
    assert ids(data, ["Patient", "Organization"], "_id=p1,obs1,o1") == ["o1", "p1"]
    assert ids(data, None, "_type=Observation&_id=p1,obs1") == ["obs1"]
    assert ids(data, None, "_tag=vip") == ["p1"]
    result = data.search(None, "name=peter")
    assert result.outcome and result.outcome["issue"][0]["expression"] == ["name"]
    with pytest.raises(BadRequest):
        data.search(None, "name=peter", strict=True)


def test_unknown_parameter_warns_or_fails(data: Store) -> None:
    result = data.search("Patient", "foo=bar&family=jones")
    assert [m["id"] for m in result.matches] == ["p3"]
    assert result.outcome["issue"][0]["severity"] == "warning"
    with pytest.raises(BadRequest) as err:
        data.search("Patient", "foo=bar", strict=True)
    assert err.value.status == 400 and err.value.issues[0].expression == ("foo",)
