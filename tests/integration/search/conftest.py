"""Fixtures for the search engine tests: a connection inside a rolled-back transaction on SQLite (a
temporary file) and on PostgreSQL (a database of its own, ``search_it_<random>``, created and dropped
here; skipped with the reason when the server is unreachable, unless REQUIRE_SERVICES=1, when that is
a failure), and a small store that writes resources with the index rows the real Indexer produces."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import os
import uuid

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, text

from fhir_server.auth.labels import policy_columns
from fhir_server.config import REPO_ROOT, Settings
from fhir_server.search.engine import execute_search, find_matches
from fhir_server.search.model import SearchResult
from fhir_server.storage.db import create_schema, make_engine
from fhir_server.storage.tables import INDEX_TABLES, resource

BASE_URL = "http://localhost/fhir"


@lru_cache(maxsize=1)
def _registry_and_indexer() -> tuple[Any, Any]:
    registry_mod = pytest.importorskip("fhir_server.search.registry")
    indexer_mod = pytest.importorskip("fhir_server.search.indexer")
    registry = registry_mod.SearchRegistry.load(REPO_ROOT / "profiles")
    return registry, indexer_mod.Indexer(registry)


class Store:
    """Writes resources (current rows + index rows) and runs searches on one connection."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.registry, self.indexer = _registry_and_indexer()
        self._clock = 0

    def put(self, content: dict[str, Any], *, last_updated: datetime | None = None,
            deleted: bool = False) -> int:
        self._clock += 1
        when = last_updated or datetime(2024, 1, 1, 0, 0, self._clock % 60, self._clock * 1000)
        stored = {**content, "meta": {**content.get("meta", {}), "versionId": "1",
                                      "lastUpdated": when.isoformat() + "Z"}}
        pk = self.conn.execute(insert(resource).values(
            res_type=content["resourceType"], res_id=content["id"], version_id=1, last_updated=when,
            deleted=deleted, content=None if deleted else stored,
            **policy_columns(None if deleted else stored))).inserted_primary_key[0]
        self.index(pk, stored)  # even when deleted: the search must filter on resource.deleted itself
        return int(pk)

    def index(self, pk: int, content: dict[str, Any]) -> None:
        for key, rows in self.indexer.rows(content).items():
            table = INDEX_TABLES[key]
            full = [{**{c.name: None for c in table.columns}, **r, "resource_pk": pk,
                     "res_type": content["resourceType"]} for r in rows]
            if full:
                self.conn.execute(insert(table), full)

    def search(self, types: str | list[str] | None, query: str = "", *, strict: bool = False,
               **overrides: Any) -> SearchResult:
        settings = self.settings.with_overrides(**overrides) if overrides else self.settings
        rtypes = [types] if isinstance(types, str) else types
        return execute_search(self.conn, self.registry, rtypes, parse_qsl(query, keep_blank_values=True),
                              settings=settings, strict=strict)

    def ids(self, types: str | list[str] | None, query: str = "", **kw: Any) -> list[str]:
        return [m["id"] for m in self.search(types, query, **kw).matches]

    def matches(self, rtype: str, query: str) -> list[tuple[int, str]]:
        return find_matches(self.conn, self.registry, rtype, parse_qsl(query, keep_blank_values=True))


@pytest.fixture
def search_settings() -> Settings:
    return Settings(base_url=BASE_URL, testing=True, profiles_dir=REPO_ROOT / "profiles",
                    default_page_size=50, max_page_size=100)


PG_ADMIN_URL = os.environ.get("FHIR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_engine() -> Iterator[Engine]:
    admin = create_engine("postgresql+psycopg://" + PG_ADMIN_URL.split("://", 1)[1], isolation_level="AUTOCOMMIT")
    name = f"search_it_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        admin.dispose()
        reason = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    eng = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        create_schema(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def search_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A throwaway database with the schema, per test module and store."""
    if request.param == "postgresql":
        yield from _postgres_engine()
        return
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('search') / 'search.db'}")
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def conn(search_engine: Engine) -> Iterator[Connection]:
    connection = search_engine.connect()
    outer = connection.begin()
    yield connection
    outer.rollback()
    connection.close()


@pytest.fixture
def store(conn: Connection, search_settings: Settings) -> Store:
    return Store(conn, search_settings)


LOINC, SNOMED, UCUM, NHS = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org", "https://fhir.nhs.uk/Id/nhs-number"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "o1", "name": "Acme Health", "partOf": {"reference": "Organization/o0"}},
    {"resourceType": "Organization", "id": "o0", "name": "Acme Group"},
    {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Smith", "given": ["Anna"]}]},
    {"resourceType": "Patient", "id": "p1", "active": True, "gender": "male", "birthDate": "1974-12-25",
     "meta": {"tag": [{"system": "http://example.org/tags", "code": "vip"}],
              "profile": ["http://example.org/StructureDefinition/child"]},
     "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
     "identifier": [{"system": NHS, "value": "9434765919",
                     "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record"}}],
     "managingOrganization": {"reference": "Organization/o1"}},
    {"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1980-02",
     "name": [{"family": "Müller", "given": ["Élodie"]}],
     "identifier": [{"system": "http://example.org/mrn", "value": "A-1"}],
     "generalPractitioner": [{"reference": "Practitioner/pr1"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "other", "name": [{"family": "Jones"}]},
    {"resourceType": "Observation", "id": "obs1", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "1234-5", "display": "Glucose"}]},
     "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-01-15T10:00:00Z",
     "valueQuantity": {"value": 5.4, "unit": "mg", "system": UCUM, "code": "mg"}},
    {"resourceType": "Observation", "id": "obs2", "status": "preliminary",
     "code": {"coding": [{"system": LOINC, "code": "1234-5"}], "text": "Blood sugar"},
     "subject": {"reference": "Patient/p2"},
     "effectivePeriod": {"start": "2020-01-01T00:00:00Z", "end": "2020-02-01T00:00:00Z"},
     "valueQuantity": {"value": 100, "unit": "mg", "system": UCUM, "code": "mg"}},
    {"resourceType": "Observation", "id": "obs3", "status": "final",
     "code": {"coding": [{"system": SNOMED, "code": "999"}]}, "subject": {"reference": "Patient/p1"},
     "effectiveDateTime": "2021-06-01", "valueQuantity": {"value": 7, "unit": "mmol/L"}},
    {"resourceType": "Observation", "id": "obs4", "status": "final",
     "code": {"coding": [{"code": "nosys"}]},
     "subject": {"identifier": {"system": NHS, "value": "9434765919"}}},
    {"resourceType": "Observation", "id": "obs5", "status": "amended",
     "code": {"coding": [{"system": LOINC, "code": "8888-8"}]},
     "subject": {"reference": "http://other.org/fhir/Patient/77"}},
    {"resourceType": "Provenance", "id": "prov1", "recorded": "2020-01-15T11:00:00Z",
     "target": [{"reference": "Observation/obs1"}], "agent": [{"who": {"reference": "Practitioner/pr1"}}]},
    {"resourceType": "RiskAssessment", "id": "ra1", "status": "final", "subject": {"reference": "Patient/p1"},
     "prediction": [{"probabilityDecimal": 0.5}]},
    {"resourceType": "RiskAssessment", "id": "ra2", "status": "final", "subject": {"reference": "Patient/p2"},
     "prediction": [{"probabilityDecimal": 100}]},
    {"resourceType": "ValueSet", "id": "vs1", "status": "active", "url": "http://acme.org/fhir/ValueSet/123"},
    {"resourceType": "ValueSet", "id": "vs2", "status": "active", "url": "http://acme.org/other/ValueSet/9"},
]


@pytest.fixture
def data(store: Store) -> Store:
    """The resources above, plus a deleted Patient that no search may return."""
    for content in RESOURCES:
        store.put(content)
    store.put({"resourceType": "Patient", "id": "p-deleted", "name": [{"family": "Chalmers"}]}, deleted=True)
    return store
