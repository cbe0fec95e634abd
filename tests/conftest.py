"""Shared fixtures: every storage, search and HTTP test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``FHIR_TEST_DATABASE_URL`` (default: the local ``test`` database, as on the CI
machine). Each test session creates its own database and drops it afterwards; each test runs in a
transaction rolled back at the end. Where PostgreSQL is absent the PostgreSQL half of the suite is
skipped with the reason — unless ``REQUIRE_SERVICES=1``, when it fails, so that CI cannot go green
without it.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from fhir_server import create_app
from fhir_server.config import Settings
from fhir_server.storage.db import create_schema, make_engine

PG_ADMIN_URL = os.environ.get("FHIR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
TEST_BASE_URL = "http://localhost/fhir"


def service_unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI (REQUIRE_SERVICES=1)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def _psycopg_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


@contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """Create a PostgreSQL database of our own, yield its URL, drop it afterwards; skip (or fail
    under REQUIRE_SERVICES=1) when PostgreSQL is not reachable."""
    admin = create_engine(_psycopg_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no PostgreSQL here"
        admin.dispose()
        service_unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (and xdist worker)."""
    with scratch_postgres_database("fhir_test") as url:
        yield url
        from fhir_server.periodic import local_beat
        # apps made by tests keep periodic jobs (audit sealing…) on this database: stop them before it goes
        local_beat.cancel_all(wait=60)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'fhir.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Parametrises every test that uses the database over both stores."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Authentication is off for the general suite: it is tested on its own, switched on, in
    # tests/functional/test_auth.py and tests/unit/auth/ (the `auth_settings` fixture there).
    return Settings(database_url=database_url, base_url=TEST_BASE_URL, testing=True,
                    profiles_dir=Path(__file__).resolve().parent.parent / "profiles", auth_enabled=False)


@pytest.fixture
def app(engine: Engine, settings: Settings):
    """The app with all storage on one connection inside a transaction rolled back after the test."""
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield create_app(settings, connection=conn)
    finally:  # also when create_app fails: never leave SQLite's write lock held
        outer.rollback()
        conn.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def committing_app(engine: Engine, settings: Settings):
    """The app on its own pool (real commits, real concurrency); tables are emptied afterwards."""
    application = create_app(settings)
    yield application
    from fhir_server.worker import wait_for_background_drains
    # the in-process outbox drain runs on a thread after each commit: its writes (linked masters, risk
    # scores) would land after the cleanup, or lock SQLite
    wait_for_background_drains(timeout=120)
    from fhir_server.periodic import local_beat
    # the sweep, the scheduled recompute, the audit sealing: a run under way would write after the cleanup
    local_beat.cancel_owned(application.extensions["fhir"].engine, wait=120)
    application.extensions["fhir"].engine.dispose()
    from fhir_server.storage.db import empty_schema
    empty_schema(engine)
