"""``fhir-server risk recompute`` after a new configuration: every child rescored, history kept."""
from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from fhir_server.storage.tables import outbox, risk_score_history
from triage.config import load_config
from triage.recompute import recompute_all

from ..functional.test_crud import body
from .conftest import observation, patient
from .test_triage_http import POLICE, children, post


def test_recompute_with_a_new_configuration(committing_app, tmp_path, monkeypatch):
    client = committing_app.test_client()
    services = committing_app.extensions["fhir"]
    child = post(client, patient(POLICE, "9990000026", "Noah", "Patel", "2012-01-03", "male"))
    post(client, observation(POLICE, f"Patient/{child}", "risk-factor", "missing-episode", 0))
    deadline = time.monotonic() + 30
    while True:  # the in-process drain runs on a background thread after each commit
        with services.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(outbox).where(outbox.c.processed_at.is_(None))).scalar_one()
        rows = children(body(client.get("/fhir/$triage")))
        if (not pending and rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows and rows[0]["score"][0] <= 12

    model = json.loads((services.settings.profiles_dir / "risk" / "risk-model.json").read_text())
    model["version"] = "2.0.0"
    for factor in model["factors"]:
        if factor["code"] == "missing":
            factor["weight"] = 40
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    monkeypatch.setenv("FHIR_RISK_MODEL", str(path))
    config = load_config(services.settings.profiles_dir)
    stats = recompute_all(services.repo, config, batch=1)
    assert stats.scored == 1 and stats.changed == 1 and stats.flags_raised == 1  # green → amber
    result = body(client.get("/fhir/$triage"))
    assert next(p["valueString"] for p in result["parameter"] if p["name"] == "model") == "sg-risk-model|2.0.0"
    assert 38 < children(result)[0]["score"][0] <= 40
    with services.engine.connect() as conn:
        versions = conn.execute(select(risk_score_history.c.config_version).where(
            risk_score_history.c.child_id == child).order_by(risk_score_history.c.id)).scalars().all()
    assert versions[-1] == "sg-risk-model|2.0.0" and set(versions[:-1]) == {"sg-risk-model|1.0.0"}
    again = recompute_all(services.repo, config)
    assert again.changed == 0 and again.flags_raised == 0  # rerunning writes nothing new
