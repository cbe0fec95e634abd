"""The embedded database under concurrent writers: two imports at once on one SQLite file both load.

SQLite has one writer at a time; a writer that waits past the busy timeout for the lock gets
SQLITE_BUSY ("database is locked"). Here the busy timeout is 50 ms and a third connection holds the
write lock for longer than that while both imports start, as a long import does on a loaded server:
each import's transaction is rolled back and run again whole (storage/db.py ``retry_when_busy``)
until it gets its turn. A request that cannot wait gets a 503 with Retry-After, never a 500.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from fhir_server import create_app
from fhir_server.config import Settings
from fhir_server.storage.db import create_schema, make_engine

from ..conftest import TEST_BASE_URL
from ..functional.test_crud import body

CIN = Path(__file__).resolve().parents[1] / "mappings" / "fixtures" / "cin" / "la202_2023.xml"


@pytest.fixture
def sqlite_app(tmp_path: Path):
    path = tmp_path / "fhir.db"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    engine.dispose()
    settings = Settings(database_url=f"sqlite:///{path}", base_url=TEST_BASE_URL, testing=True,
                        profiles_dir=Path(__file__).resolve().parents[2] / "profiles", auth_enabled=False,
                        sqlite_busy_timeout=0.05)
    app = create_app(settings)
    yield app, path
    from fhir_server.worker import wait_for_background_drains
    wait_for_background_drains(timeout=60)
    app.extensions["fhir"].engine.dispose()


def _census(lea: str) -> bytes:
    return CIN.read_bytes().replace(b"<LEA>202</LEA>", f"<LEA>{lea}</LEA>".encode())


def test_two_concurrent_imports_on_sqlite_both_load(sqlite_app):
    app, path = sqlite_app
    answers: dict[str, tuple[int, dict]] = {}

    def post(lea: str) -> None:
        res = app.test_client().post(f"/fhir/$import-agency-data?format=cin-census-xml&filename=la{lea}.xml",
                                     data=_census(lea), content_type="application/xml")
        answers[lea] = (res.status_code, body(res))

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, busy for 10 busy timeouts
    threads = [threading.Thread(target=post, args=(lea,)) for lea in ("202", "203")]
    for t in threads:
        t.start()
    time.sleep(0.5)
    holder.execute("ROLLBACK")
    holder.close()
    for t in threads:
        t.join(timeout=120)
    assert {lea: status for lea, (status, _b) in answers.items()} == {"202": 200, "203": 200}, answers
    client = app.test_client()
    for lea in ("202", "203"):
        patients = body(client.get(f"/fhir/Patient?identifier=https://w3id.org/sg-fhir/Id/la-child-id/{lea}|"
                                   "&_summary=count"))
        assert patients["total"] == 2


def test_a_write_that_cannot_get_the_lock_is_a_503_with_retry_after(sqlite_app):
    app, path = sqlite_app
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        res = app.test_client().post("/fhir/Patient", json={"resourceType": "Patient"},
                                     headers={"Content-Type": "application/fhir+json"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.status_code == 503
    assert res.headers["Retry-After"] == "1"
    assert body(res)["issue"][0]["code"] == "transient"
    assert app.test_client().post("/fhir/Patient", json={"resourceType": "Patient"},
                                  headers={"Content-Type": "application/fhir+json"}).status_code == 201
