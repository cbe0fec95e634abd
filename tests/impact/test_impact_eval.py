"""bench/impact_eval.py's bookkeeping: a failed seed leaves no files or database behind, and a cell
without a truth is not scored as a zero-effect cell."""
from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from bench import harness, impact_eval
from tests.conftest import PG_ADMIN_URL, service_unavailable


def _cell(estimate: float, lower: float, upper: float) -> dict:
    return {"estimate": estimate, "ci-lower": lower, "ci-upper": upper, "e-value-ci": 1.5, "first-month-check": "passed",
            "statement": ""}


def test_a_cell_without_a_truth_is_left_out_of_every_figure():
    found = {("mentoring", "cp-plan"): _cell(0.01, -0.02, 0.04),  # the designed null, truth 0 over 120 children
             ("parenting", "cp-plan"): _cell(0.30, 0.20, 0.40),   # truth missing: not a zero-effect cell
             ("parenting", "care"): _cell(0.25, 0.10, 0.40)}      # truth over no child (n = 0)
    truth = {("mentoring", "cp-plan"): (0.0, 120), ("parenting", "care"): (0.0, 0)}
    rows, lines = impact_eval.summarise([{"seed": 1, "found": found, "truth": truth}], "mentoring")
    assert lines[0].startswith("cells: 3; without a truth (left out below): 2; estimates given: 1;")
    assert "intervals containing the truth: 1 of 1" in lines[1] and "RMSE 0.0100" in lines[1]
    assert lines[2].startswith("cells with a true effect of 0 reported as significant: 0 of 1 ")
    assert sorted(r[6] for r in rows if r[1] == "parenting") == ["no truth: no child in the estimand"] * 2


def test_a_failed_seed_removes_its_files(monkeypatch):
    made: list[Path] = []

    def generate(families: int, seed: int, directory: Path) -> dict:
        (directory / "health.csv").write_text("nhs_number\n", encoding="utf-8")
        made.append(directory)
        raise RuntimeError("the generator failed")

    monkeypatch.setattr(impact_eval, "generate", generate)
    with pytest.raises(RuntimeError, match="the generator failed"):
        impact_eval.run_seed(10, 7, PG_ADMIN_URL, "s5_unused_", reuse=False, keep=False)
    assert made and not made[0].exists()


def test_a_failed_seed_drops_every_seed_database(monkeypatch):
    """The first seed creates its database and fails: main drops it (and the second's) on the way out."""
    try:
        harness.database_exists(PG_ADMIN_URL, "postgres")
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}")
    prefix = f"impact_eval_test_{uuid.uuid4().hex[:8]}_"

    def run_seed(*, seed: int, families: int, pg_url: str, prefix: str, reuse: bool, keep: bool) -> dict:
        harness.create_database(pg_url, f"{prefix}{seed}")
        raise RuntimeError(f"seed {seed} failed")

    monkeypatch.setattr(impact_eval, "run_seed", run_seed)
    try:
        with pytest.raises(RuntimeError, match="seed 1 failed"):
            impact_eval.main(["--families", "10", "--seeds", "1", "2", "--pg-url", PG_ADMIN_URL, "--db-prefix", prefix])
        assert not harness.database_exists(PG_ADMIN_URL, f"{prefix}1")
    finally:
        for seed in (1, 2):
            harness.drop_database(PG_ADMIN_URL, f"{prefix}{seed}")
