"""The alembic migrations build exactly the schema that fhir_server/storage/tables.py declares, on
SQLite and on PostgreSQL, and every revision downgrades cleanly.

A change to tables.py without a migration (an index added, a column widened) fails here: write the
migration with ``alembic revision --autogenerate --rev-id NNNN -m "..."`` and review it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import DBAPIError

from fhir_server.cli import alembic_config, current_revision, head_revision
from fhir_server.storage.db import make_engine
from fhir_server.storage.tables import metadata
from tests.conftest import scratch_postgres_database


@pytest.fixture(scope="session")
def scratch_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own (not the one conftest gives the other tests):
    creating and dropping a database costs seconds, so tests empty this one instead."""
    with scratch_postgres_database("fhir_migrate") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it: a new SQLite file, or the scratch PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrated.db'}"
    url = request.getfixturevalue("scratch_postgres_url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True, "target_metadata": metadata})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_builds_exactly_the_declared_schema(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")

    assert schema_differences(empty_database_url) == []
    engine = make_engine(empty_database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()

    command.downgrade(config, "base")
    assert table_names(empty_database_url) == {"alembic_version"}


def test_every_revision_upgrades_downgrades_and_upgrades_again(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    revisions = list(reversed(list(ScriptDirectory.from_config(config).walk_revisions())))
    for revision in revisions:
        command.upgrade(config, revision.revision)
        command.downgrade(config, revision.down_revision or "base")
        command.upgrade(config, revision.revision)
    assert schema_differences(empty_database_url) == []
    assert table_names(empty_database_url) == {table.name for table in metadata.sorted_tables} | {"alembic_version"}


def test_upgrade_is_idempotent(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")
    command.upgrade(config, "head")
    assert schema_differences(empty_database_url) == []


def test_the_migrated_audit_trail_is_append_only(empty_database_url: str) -> None:
    """Migration 0012: the migrated database (not only create_all's) refuses to rewrite the trail,
    and lets the sealer set an unsealed row's chain values once."""
    command.upgrade(alembic_config(empty_database_url), "head")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_event (event_id, recorded, content) "
                              "VALUES ('e1', '2026-11-25 20:00:00', '{\"resourceType\": \"AuditEvent\"}')"))
            conn.execute(text("UPDATE audit_event SET chain_pos = 1, prev_hash = 'p', hash = 'h' WHERE event_id = 'e1'"))
        for statement in ("UPDATE audit_event SET hash = 'forged'", "DELETE FROM audit_event"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT hash FROM audit_event")).scalar_one() == "h"
    finally:
        engine.dispose()


# an Observation as an older server stored it: confidentiality R, from police force 01
LABELLED = ('{"resourceType": "Observation", "id": "o1", "meta": {"security": [{"system": '
            '"http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}], "tag": [{"system": '
            '"https://w3id.org/sg-fhir/CodeSystem/source-agency", "code": "police/01"}]}}')


def test_the_policy_columns_are_backfilled_from_each_rows_json(empty_database_url: str) -> None:
    """Migration 0021: rows stored before it get the access policy's columns (labels.policy_columns)
    from their JSON: labels as bits, source-agency and owner-client tags; a deleted row none, but a
    deleted Subscription the owner tags of its last stored version."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0020_s4_audit")
    owned = ('{"resourceType": "Subscription", "id": "s1", "meta": {"tag": [{"system": '
             '"https://w3id.org/sg-fhir/CodeSystem/source-agency", "code": "health/RXX"}, {"system": '
             '"https://w3id.org/sg-fhir/CodeSystem/owner-client", "code": "feed"}]}}')
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for pk, res_type, res_id, content in ((1, "Observation", "o1", LABELLED), (2, "Subscription", "s1", owned),
                                                  (3, "Patient", "p1", '{"resourceType": "Patient", "id": "p1"}'),
                                                  (4, "Patient", "gone", None)):
                conn.execute(text("INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, "
                                  "content) VALUES (:pk, :t, :i, 1, '2026-11-26 01:00:00', :d, :c)"),
                             {"pk": pk, "t": res_type, "i": res_id, "d": content is None, "c": content})
            # a Subscription its owner deleted: version 1 the owned content, version 2 the deletion
            conn.execute(text("INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, "
                              "content) VALUES (5, 'Subscription', 's2', 2, '2026-11-26 01:00:00', true, NULL)"))
            insert_history(conn, 5, "Subscription", "s2", [owned.replace('"s1"', '"s2"'), None], first="POST")
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = {r.res_id: (r.sensitivity, r.agencies, r.owners) for r in conn.execute(
                text("SELECT res_id, sensitivity, agencies, owners FROM resource"))}
    finally:
        engine.dispose()
    assert rows == {"o1": (64, "\tpolice/01\t", ""), "s1": (0, "\thealth/RXX\t", "\tfeed\t"),
                    "p1": (0, "", ""), "gone": (0, "", ""), "s2": (0, "\thealth/RXX\t", "\tfeed\t")}


def test_the_policy_flagged_index_is_built_without_blocking_writes(empty_database_url: str) -> None:
    """Migration 0021 (ix_resource_policy_flagged): on PostgreSQL the partial index is built
    CONCURRENTLY (outside a transaction: ``resource`` stays writable while it builds on a large
    table), as migration 0002 builds its own; on SQLite a plain index. Either way it ends valid."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0021_s5audit_policy_columns")
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "ix_resource_policy_flagged" in statement:
            statements.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        command.upgrade(config, "0021_s5fix2_policy_flagged")
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    postgres = empty_database_url.startswith("postgresql")
    assert len(statements) == 1, statements
    assert statements[0].startswith("CREATE INDEX CONCURRENTLY ix_resource_policy_flagged" if postgres
                                    else "CREATE INDEX ix_resource_policy_flagged"), statements
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            if postgres:
                assert conn.execute(text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = 'ix_resource_policy_flagged'")).scalar_one() is True
            else:
                assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                         "AND name = 'ix_resource_policy_flagged'")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_deleted_rows_policy_columns_come_from_the_version_it_deleted(empty_database_url: str) -> None:
    """Migration 0021_s5fix3: a resource deleted before the policy columns existed gets those of its
    last stored content (labels as bits, source agency), so that a caller who could not see it is
    not told it was deleted (policy.Visibility.allows_deleted); a deleted row with no stored
    content keeps what it had."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0020_s4_audit")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for pk, res_id in ((1, "o1"), (2, "bare")):
                conn.execute(text("INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, "
                                  "content) VALUES (:pk, 'Observation', :i, 3, '2026-11-26 01:00:00', true, NULL)"),
                             {"pk": pk, "i": res_id})
            insert_history(conn, 1, "Observation", "o1", [LABELLED.replace('"R"', '"N"'), LABELLED, None], first="PUT")
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = {r.res_id: (r.sensitivity, r.agencies, r.owners) for r in conn.execute(
                text("SELECT res_id, sensitivity, agencies, owners FROM resource"))}
    finally:
        engine.dispose()
    assert rows == {"o1": (64, "\tpolice/01\t", ""), "bare": (0, "", "")}


def insert_history(conn, pk: int, res_type: str, res_id: str, contents: list[str | None], *, first: str) -> None:
    """Versions 1… of one resource's history as an older server wrote them (None: a deletion)."""
    for version, content in enumerate(contents, start=1):
        method = "DELETE" if content is None else (first if version == 1 else "PUT")
        conn.execute(text("INSERT INTO resource_history (resource_pk, version_id, res_type, res_id, last_updated, "
                          "method, deleted, content) VALUES (:pk, :v, :t, :i, '2026-11-26 01:00:00', :m, :d, :c)"),
                     {"pk": pk, "v": version, "t": res_type, "i": res_id, "m": method, "d": content is None,
                      "c": content})
