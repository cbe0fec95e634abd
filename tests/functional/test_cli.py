"""The ``fhir-server`` command: migrate, reindex, and serve (a real gunicorn, spoken to over HTTP),
each on a database of its own, SQLite and PostgreSQL."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import delete, func, select

from fhir_server import create_app
from fhir_server.cli import head_revision, main
from fhir_server.config import REPO_ROOT, Settings
from fhir_server.storage.db import make_engine
from fhir_server.storage.tables import INDEX_TABLES, outbox
from tests.integration.test_migrations import empty_database_url, scratch_postgres_url  # noqa: F401 - fixtures

PROFILES = REPO_ROOT / "profiles"


@pytest.fixture
def migrated_database_url(empty_database_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                          capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("FHIR_DATABASE_URL", empty_database_url)
    assert main(["migrate"]) == 0
    capsys.readouterr()
    return empty_database_url


def index_row_count(url: str, res_type: str = "Patient") -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return sum(conn.execute(select(func.count()).select_from(t).where(t.c.res_type == res_type)).scalar_one()
                       for t in INDEX_TABLES.values())
    finally:
        engine.dispose()


def test_without_a_command_it_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "reindex"):
        assert command in out


def test_migrate_creates_the_schema_then_has_nothing_to_do(
        empty_database_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_DATABASE_URL", empty_database_url)
    assert main(["migrate"]) == 0
    assert f"now at revision {head_revision()}" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "Nothing to do" in capsys.readouterr().out


def test_an_unreachable_database_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_DATABASE_URL", "postgresql://postgres:secret@127.0.0.1:1/nowhere")
    assert main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fhir-server migrate: Cannot use the database postgresql://postgres:***@127.0.0.1:1/")
    assert "secret" not in err


def test_an_unknown_revision_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_DATABASE_URL", f"sqlite:///{tmp_path / 'fhir.db'}")
    assert main(["migrate", "--revision", "9999"]) == 1
    assert "fhir-server migrate: Can't locate revision identified by '9999'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["serve"], ["reindex"]])
def test_commands_refuse_a_database_without_the_schema(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(command) == 1
    assert "Run `fhir-server migrate`" in capsys.readouterr().err


def test_reindex_rebuilds_the_search_index(migrated_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(database_url=migrated_database_url, base_url="http://localhost/fhir", profiles_dir=PROFILES,
                        auth_enabled=False)  # authentication is tested in test_auth.py
    app = create_app(settings)
    client = app.test_client()
    try:
        for family in ("Reindexed", "Other"):
            created = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
            assert created.status_code == 201, created.get_data(as_text=True)
        indexed = index_row_count(migrated_database_url)
        assert indexed > 0
        with app.extensions["fhir"].engine.begin() as conn:
            for table in INDEX_TABLES.values():
                conn.execute(delete(table))
        assert client.get("/fhir/Patient?family=Reindexed").get_json()["total"] == 0

        assert main(["reindex", "--type", "Patient"]) == 0
        assert "reindexed 2 resources" in capsys.readouterr().out

        assert index_row_count(migrated_database_url) == indexed
        found = client.get("/fhir/Patient?family=Reindexed").get_json()
        assert found["total"] == 1
    finally:
        app.extensions["fhir"].engine.dispose()


def test_reindex_rejects_an_unknown_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reindex", "--type", "Patients"]) == 1
    assert "'Patients' is not a FHIR R4 resource type" in capsys.readouterr().err


class Served(subprocess.Popen):  # type: ignore[type-arg]
    output: str = ""


@contextmanager
def serving(port: int, env: dict[str, str]) -> Iterator[Served]:
    """``fhir-server serve`` (2 workers) in a subprocess, once it answers /healthz; SIGTERM on exit.
    The process's output is in ``.output`` afterwards."""
    proc = Served([sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port), "--workers", "2"],
                  cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{proc.communicate()[0]}")
            try:
                # the socket listens before the workers have built the app: allow for a slow first answer
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.output, _ = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.output, _ = proc.communicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(migrated_database_url: str) -> Iterator[str]:
    """``fhir-server serve`` in a subprocess, as ``make run`` starts it; yields the FHIR base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    # authentication is tested in test_auth.py (test_serve_with_the_dev_issuer starts it switched on)
    env = {**os.environ, "FHIR_DATABASE_URL": migrated_database_url, "FHIR_BASE_URL": base, "FHIR_AUTH_ENABLED": "0"}
    env.pop("FHIR_BROKER_URL", None)
    with serving(port, env) as proc:
        yield base
    assert proc.returncode == 0, f"the server did not stop cleanly:\n{proc.output}"


def test_serve_answers_the_fhir_api(server: str, migrated_database_url: str) -> None:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    created = requests.post(f"{server}/Patient", headers=headers, timeout=30,
                            json={"resourceType": "Patient", "name": [{"family": "Served"}]})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith(f"{server}/Patient/")

    read = requests.get(location.split("/_history/")[0], headers=headers, timeout=30)
    assert read.status_code == 200
    assert read.json()["name"] == [{"family": "Served"}]
    assert requests.get(f"{server}/metadata", headers=headers, timeout=30).json()["resourceType"] == \
        "CapabilityStatement"

    # wsgi.py wires the after-commit outbox drain (eager: no FHIR_BROKER_URL)
    engine = make_engine(migrated_database_url)
    try:
        deadline = time.monotonic() + 10  # the drain runs on a background thread after the commit
        while True:
            with engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(outbox)
                                       .where(outbox.c.processed_at.is_(None))).scalar_one()
                patients = conn.execute(select(func.count()).select_from(outbox)
                                        .where(outbox.c.res_type == "Patient")).scalar_one()
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert pending == 0
        assert patients == 1
    finally:
        engine.dispose()
