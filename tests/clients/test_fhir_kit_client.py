"""fhir-kit-client (Vermonster's JavaScript client, on Node) against the live server: create, read,
update, search (GET and POST _search) with _include and nextPage to the last page, and a
transaction Bundle. The script js/crud_search_transaction.mjs does the calls and prints JSON;
this test asserts on it.

The npm packages come from js/package-lock.json (``npm ci``), installed once into js/node_modules
and reused until the lock file changes.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import service_unavailable
from .conftest import LiveServer

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "crud_search_transaction.mjs"
STAMP = JS_DIR / "node_modules" / ".installed-lock-sha256"


def _npm_ci() -> None:
    """``npm ci`` unless node_modules already holds this lock file's packages; one installer at a
    time (pytest-xdist workers share the folder)."""
    wanted = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    with open(JS_DIR / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.is_file() and STAMP.read_text() == wanted:
            return
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            service_unavailable(f"npm ci failed in {JS_DIR}: {done.stderr.strip()[-2000:]}")
        STAMP.write_text(wanted)


@pytest.fixture(scope="session")
def node() -> str:
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if not node_bin or not npm_bin:
        service_unavailable("node and npm are needed for the fhir-kit-client tests")
    major = int(subprocess.run([node_bin, "--version"], capture_output=True, text=True).stdout.lstrip("v").split(".")[0])
    if major < 20:
        service_unavailable(f"fhir-kit-client 2 needs Node 20 or later, found {major}")
    _npm_ci()
    return node_bin


def test_fhir_kit_client_create_read_update_search_transaction(node: str, live_server: LiveServer) -> None:
    done = subprocess.run([node, str(SCRIPT), live_server.base_url], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip(), done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    assert done.returncode == 0, done.stderr

    pid = out["created"]["id"]
    assert pid and out["created"]["versionId"] == "1"
    assert out["read"] == {"id": pid, "family": "Okafor", "versionId": "1"}
    assert out["updated"] == {"id": pid, "versionId": "2", "gender": "male"}
    assert out["reread"] == {"versionId": "2", "gender": "male"}

    newest_first = list(reversed(out["observations"]))
    for pages in (out["searchPages"], out["postSearchPages"]):
        assert [len(p["matches"]) for p in pages] == [2, 2, 1]
        assert [m for p in pages for m in p["matches"]] == newest_first
        assert all(p["type"] == "searchset" and p["total"] == 5 for p in pages)
        assert all(p["included"] == [f"Patient/{pid}"] for p in pages)
        assert [p["hasNext"] for p in pages] == [True, True, False]

    transaction = out["transaction"]
    assert transaction["type"] == "transaction-response"
    assert [s.split()[0] for s in transaction["statuses"]] == ["201", "201"]
    patient_location, observation_location = transaction["locations"]
    assert "/Patient/" in patient_location and "/Observation/" in observation_location
    new_patient_id = patient_location.split("/Patient/", 1)[1].split("/")[0]
    assert out["transactionObservationSubject"] == f"Patient/{new_patient_id}"
