"""Honesty harness for ``$intervention-impact``: run it on the synthetic generator's data, whose true
effects are known, and report bias, interval coverage and false alarms.

For each seed: generate ``--families`` families (with the counterfactual run: every treated child's
outcomes without any intervention effect, from the same random numbers), import every agency file
through the server's own importer into a fresh PostgreSQL database, do the after-commit work a
server's workers would (record linkage, risk scoring), call ``GET [base]/$intervention-impact?mode=evaluate`` for every intervention type
in-process, and compare each reported effect with the truth computed from the ground truth for the
same estimand: among children whose first episode of the type started at month >= 3 with 12 months
of data after it and no child protection plan (care episode) before it, the mean of factual minus
counterfactual "first plan (care) within 12 months of the start", the counterfactual being the
generator's run in which only that episode does nothing.

Prints one row per intervention and outcome, then the summary: mean bias, the share of intervals
that contain the truth, and whether the zero-effect intervention (mentoring) was reported as
significant. Each row also shows the E-value of the interval and the first-month check of the type
(passed, failed or not made, with the difference in concern events in the first month and its p-value).

    python bench/impact_eval.py --families 1500 --seeds 1 2 --keep
    python bench/impact_eval.py --families 1500 --seeds 1 2 --reuse   # again, on the kept databases
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402

HORIZON = 12
MIN_HISTORY = 3
OUTCOMES = ("cp-plan", "looked-after")
TRUTH_COLUMNS = {"cp-plan": ("first_cp_plan_month", "cf_first_cp_plan_month"),  # episode_outcomes.csv
                 "looked-after": ("first_looked_after_month", "cf_first_looked_after_month")}


def generate(families: int, seed: int, out: Path) -> dict[str, Any]:
    from synthetic.config import SynthConfig
    from synthetic.generator import generate as run

    run(SynthConfig(families=families, seed=seed), out, progress=False, overwrite=True)
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def load(directory: Path, url: str) -> float:
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_AUTH_ENABLED": "0"}
    started = time.perf_counter()
    for args in (["migrate"], ["import", "--manifest", str(directory / "manifest.json")]):
        subprocess.run(harness.cli(*args), env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def settle(app: Any) -> tuple[int, float]:
    """Do the after-commit work the import left in the outbox: above all record linkage, which makes
    one child of the agencies' records (without it a child's police, school and health records are
    other "children", and the estimator sees none of what drove the offer), then risk scoring.
    A server does this on its workers; the import command exits before they would. Returns (events
    processed, seconds)."""
    from fhir_server import worker

    services = app.extensions["fhir"]
    harness.analyze(services.settings.database_url)  # statistics first: the matcher's plans need them
    started = time.perf_counter()
    done = worker.drain(services.engine)
    return done, time.perf_counter() - started


def truth(directory: Path, months: int) -> dict[tuple[str, str], tuple[float, int]]:
    """(intervention, outcome) -> (true effect on the treated, children in the estimand).

    The effect of a child's first episode of the type is read from the generator's run where only that
    episode does nothing (``episode_outcomes.csv``): earlier and later interventions of the family keep
    their effects in both runs, because the estimator compares children with the same history and
    does not credit an episode with what came before it."""
    gt = directory / "ground_truth"
    first: dict[tuple[str, str], dict[str, str]] = {}  # (child, type) -> the row of the child's first episode
    for row in csv.DictReader((gt / "episode_outcomes.csv").open(encoding="utf-8")):
        key = (row["person_id"], row["type"])
        if key not in first or int(row["start_month"]) < int(first[key]["start_month"]):
            first[key] = row
    diffs: dict[tuple[str, str], list[int]] = {}
    for (_child, kind), row in first.items():
        start = int(row["start_month"])
        if start < MIN_HISTORY or start + HORIZON > months:
            continue
        for outcome, (fact_col, cf_col) in TRUTH_COLUMNS.items():
            fact, cf = (int(row[c]) if row[c] != "" else None for c in (fact_col, cf_col))
            if fact is not None and fact < start:
                continue  # a plan before the start: not a first one, outside the estimand
            y1 = int(fact is not None and start <= fact < start + HORIZON)
            y0 = int(cf is not None and start <= cf < start + HORIZON)
            diffs.setdefault((kind, outcome), []).append(y1 - y0)
    return {k: (sum(v) / len(v), len(v)) for k, v in diffs.items()}


def server(url: str) -> Any:
    from fhir_server import create_app
    from fhir_server.config import Settings

    return create_app(Settings(database_url=url, auth_enabled=False))


def evaluate_all(app: Any, kinds: list[str]) -> tuple[dict[tuple[str, str], dict[str, Any]], float]:
    client = app.test_client()
    query = f"mode=evaluate&intervention={','.join(kinds)}&outcome={','.join(OUTCOMES)}"
    started = time.perf_counter()
    response = client.get(f"/fhir/$intervention-impact?{query}")
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"$intervention-impact failed: {response.status_code} {response.get_data(as_text=True)}")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for result in (p for p in response.get_json()["parameter"] if p["name"] == "result"):
        kind = next(p["valueCoding"]["code"] for p in result["part"] if p["name"] == "intervention")
        check = next((p for p in result["part"] if p["name"] == "first-month-check"), None)
        checked = "-"
        if check is not None:
            c = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in check["part"]}
            checked = c["passed"] + (f" {c['estimate']:+.2f} p={c['p-value']:.3f}" if "estimate" in c else "")
        for o in (p for p in result["part"] if p["name"] == "outcome"):
            values = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                      for p in o["part"] if p["name"] != "balance"}
            found[(kind, values["code"])] = values | {"first-month-check": checked}
    return found, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--pg-url", default=harness.DEFAULT_PG_URL, help="PostgreSQL server (a database per seed)")
    parser.add_argument("--db-prefix", default="bench_impact_eval_",
                        help="database name prefix (a database per seed: PREFIX + seed)")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the databases a --keep run left (PREFIX + SEED) instead of importing "
                             "again; the files are generated again (the generator is deterministic) for the truth")
    args = parser.parse_args(argv)
    print(harness.machine_summary())
    from synthetic.interventions import CATALOGUE, ZERO_EFFECT

    kinds = sorted(CATALOGUE)
    rows, covered, reported, bias, false_alarm = [], 0, 0, [], []
    for seed in args.seeds:
        directory = Path(tempfile.mkdtemp(prefix=f"impact-{seed}-"))
        manifest = generate(args.families, seed, directory)
        name = f"{args.db_prefix}{seed}"
        if args.reuse and harness.database_exists(args.pg_url, name):
            url, loaded = harness.db_url(args.pg_url, name), 0.0
        else:
            url = harness.create_database(args.pg_url, name)
            loaded = load(directory, url)
        months = int(manifest["months"])
        true = truth(directory, months)
        app = server(url)
        events, settled = settle(app)
        found, elapsed = evaluate_all(app, kinds)
        imported = f"imported in {loaded:.0f} s" if loaded else "reused (imported by an earlier --keep run)"
        print(f"seed {seed}: {args.families:,} families {imported}, {events:,} after-commit events "
              f"(linkage, scoring) in {settled:.0f} s; "
              f"evaluation of {len(kinds)} interventions x {len(OUTCOMES)} outcomes in {elapsed:.1f} s")
        for (kind, outcome), values in sorted(found.items()):
            effect, n = true.get((kind, outcome), (0.0, 0))
            if "estimate" in values:
                inside = values["ci-lower"] <= effect <= values["ci-upper"]
                significant = values["ci-lower"] > 0 or values["ci-upper"] < 0
                reported += 1
                covered += inside
                bias.append(values["estimate"] - effect)
                if kind == ZERO_EFFECT:
                    false_alarm.append(significant)
                rows.append((seed, kind, outcome, n, f"{effect:+.4f}", f"{values['estimate']:+.4f}",
                             f"[{values['ci-lower']:+.4f}, {values['ci-upper']:+.4f}]", "yes" if inside else "NO",
                             "yes" if significant else "no", f"{values.get('e-value-ci', '-')}",
                             values["first-month-check"]))
            else:
                rows.append((seed, kind, outcome, n, f"{effect:+.4f}", "-", values["statement"][:60], "-", "-", "-",
                             values["first-month-check"]))
        harness.release_database(args.pg_url, name, keep=args.keep)
    harness.print_table("Reported effect against the truth (first plan / care within 12 months of the start)",
                        ("seed", "intervention", "outcome", "truth n", "true effect", "estimate", "95% interval",
                         "covered", "significant", "E-value (interval)", "first-month check"), rows)
    if reported:
        print(f"intervals reported: {reported}; containing the truth: {covered} ({covered / reported:.0%}); "
              f"mean bias {sum(bias) / len(bias):+.4f}; mean |bias| {sum(abs(b) for b in bias) / len(bias):.4f}")
    print(f"zero-effect intervention reported as significant: {sum(false_alarm)} of {len(false_alarm)} reported")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
