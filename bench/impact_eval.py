"""Honesty harness for ``$intervention-impact``: run it on the synthetic generator's data, whose true
effects are known, and report bias, interval coverage and false alarms.

For each seed: generate ``--families`` families (with the counterfactual run: every treated child's
outcomes without any intervention effect, from the same random numbers), import every agency file
through the server's own importer (``fhir-server import``) into a fresh PostgreSQL database, do the
after-commit work a server's workers would (record linkage on the outbox, then one risk recompute:
see :func:`settle`), call ``GET [base]/$intervention-impact?mode=evaluate`` for every intervention
type in-process through the Flask test client, and compare each reported effect with the truth
computed from the ground truth for the same estimand: among children whose first episode of the type
started at month >= 3 with 12 months of data after it and no child protection plan (care episode)
before it, the mean of factual minus counterfactual "first plan (care) within 12 months of the
start", the counterfactual being the generator's run in which only that episode does nothing.
``--jobs`` runs seeds side by side in processes of their own.

Prints one row per intervention and outcome, then the summary: mean bias, the share of intervals
that contain the truth, and whether the zero-effect intervention (mentoring) was reported as
significant. Each row also shows the E-value of the interval and the first-month check of the type
(passed, failed or not made, with the difference in concern events in the first month and its p-value).

    python bench/impact_eval.py --families 2500 --seeds 1 2 3 --jobs 3 --keep --json eval.json
    python bench/impact_eval.py --families 2500 --seeds 1 2 3 --reuse   # again, on the kept databases
    python bench/impact_eval.py --report eval.json                      # the table of the seeds it holds
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
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


# The import's after-commit tasks go to Celery's in-memory transport, which nobody reads: the outbox
# rows stay pending for settle() instead of being half-drained by a thread of the import process that
# the command's exit kills (and that took the GIL from the import meanwhile).
IMPORT_ENV = {"FHIR_AUTH_ENABLED": "0", "FHIR_BROKER_URL": "memory://"}


def load(directory: Path, url: str) -> tuple[float, float]:
    """Create the schema and import every file of the manifest with ``fhir-server import`` (the real
    import path: mapping, transaction Bundles, search index rows, outbox). Returns (seconds, CPU
    seconds of the import processes)."""
    env = {**os.environ, "FHIR_DATABASE_URL": url, **IMPORT_ENV}
    started, cpu = time.perf_counter(), _children_cpu()
    for args in (["migrate"], ["import", "--manifest", str(directory / "manifest.json")]):
        subprocess.run(harness.cli(*args), env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, _children_cpu() - cpu


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def settle(app: Any) -> dict[str, float]:
    """Do the after-commit work the import left in the outbox, as a server's workers would, with the
    batch path where the server has one:

    1. record linkage, event by event (the outbox drain with linking on write): it makes one child of
       the agencies' records — without it a child's police, school and health records are other
       "children", and the estimator sees none of what drove the offer. Linking has no batch path;
    2. risk scoring once, at the end, with ``fhir-server risk recompute`` (the documented path after a
       bulk load, triage/consumer.py) instead of rescoring on write: rescoring a child and its
       siblings for each of its events took a third of the drain and leaves the same final scores.
       The scores are stamped with the time they are computed either way, so their history says
       nothing about the imported months; the cp-plan and looked-after estimates do not read them.

    Returns the events drained and the seconds (wall and this process's CPU) of each step."""
    from fhir_server import worker

    services = app.extensions["fhir"]
    url = services.settings.database_url
    harness.analyze(url)  # statistics first: the matcher's plans need them
    started, cpu = time.perf_counter(), time.process_time()
    previous = os.environ.get("FHIR_RISK_ON_WRITE")
    os.environ["FHIR_RISK_ON_WRITE"] = "false"  # read by triage/consumer.py at each batch
    try:
        done = worker.drain(services.engine, limit=2000)
    finally:
        if previous is None:
            os.environ.pop("FHIR_RISK_ON_WRITE", None)
        else:
            os.environ["FHIR_RISK_ON_WRITE"] = previous
    linked, link_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), _children_cpu()
    env = {**os.environ, "FHIR_DATABASE_URL": url, **IMPORT_ENV}
    subprocess.run(harness.cli("risk", "recompute"), env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    harness.analyze(url)
    return {"events": done, "link_s": linked, "link_cpu": link_cpu,
            "score_s": time.perf_counter() - started, "score_cpu": _children_cpu() - cpu}


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


def run_seed(families: int, seed: int, pg_url: str, prefix: str, *, reuse: bool, keep: bool) -> dict[str, Any]:
    """Generate, import, settle and evaluate one seed (in a process of its own with ``--jobs``)."""
    from synthetic.interventions import CATALOGUE

    kinds = sorted(CATALOGUE)
    directory = Path(tempfile.mkdtemp(prefix=f"impact-{seed}-"))
    try:  # the generated files go whether the seed succeeds or fails (its database: main's finally)
        started = time.perf_counter()
        manifest = generate(families, seed, directory)
        generated = time.perf_counter() - started
        name = f"{prefix}{seed}"
        if reuse and harness.database_exists(pg_url, name):
            url, (loaded, load_cpu) = harness.db_url(pg_url, name), (0.0, 0.0)
        else:
            url = harness.create_database(pg_url, name)
            loaded, load_cpu = load(directory, url)
        true = truth(directory, int(manifest["months"]))
        app = server(url)
        settled = settle(app)
        found, elapsed = evaluate_all(app, kinds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    imported = (f"imported in {loaded:.0f} s ({load_cpu:.0f} CPU s)" if loaded
                else "reused (imported by an earlier --keep run)")
    info = (f"seed {seed}: {families:,} families generated in {generated:.0f} s, {imported}; "
            f"{settled['events']:,} after-commit events linked in {settled['link_s']:.0f} s "
            f"({settled['link_cpu']:.0f} CPU s in Python), risk recompute {settle_line(settled)}; "
            f"evaluation of {len(kinds)} interventions x {len(OUTCOMES)} outcomes in {elapsed:.1f} s"
            )
    return {"seed": seed, "info": info, "found": found, "truth": true}


def settle_line(settled: dict[str, float]) -> str:
    return f"{settled['score_s']:.0f} s ({settled['score_cpu']:.0f} CPU s)"


def summarise(results: list[dict[str, Any]], zero_effect: str) -> tuple[list[tuple], list[str]]:
    """The table rows and the summary lines: bias, RMSE and coverage of the estimates given, and the
    zero-effect cells reported as significant (the designed null, and every cell whose truth is 0). A
    cell without a truth (none computed, or no child in its estimand: n = 0) is listed and counted
    but left out of every figure: its effect is unknown, not zero."""
    rows: list[tuple] = []
    errors: list[float] = []
    covered = 0
    null_cells, null_significant, designed, designed_significant = 0, 0, 0, 0
    withheld: dict[str, int] = {}
    no_truth = 0
    for result in sorted(results, key=lambda r: r["seed"]):
        for (kind, outcome), values in sorted(result["found"].items()):
            effect, n = result["truth"].get((kind, outcome), (0.0, 0))
            if not n:  # no truth for the cell (no child in its estimand): neither an error nor a zero effect
                no_truth += 1
                rows.append((result["seed"], kind, outcome, 0, "-", f"{values['estimate']:+.4f}"
                             if "estimate" in values else "-", "no truth: no child in the estimand", "-", "-", "-",
                             values["first-month-check"]))
                continue
            if "estimate" not in values:
                reason = _reason(values["statement"])
                withheld[reason] = withheld.get(reason, 0) + 1
                rows.append((result["seed"], kind, outcome, n, f"{effect:+.4f}", "-", "withheld: " + reason, "-",
                             "-", "-", values["first-month-check"]))
                continue
            inside = values["ci-lower"] <= effect <= values["ci-upper"]
            significant = values["ci-lower"] > 0 or values["ci-upper"] < 0
            covered += inside
            errors.append(values["estimate"] - effect)
            if abs(effect) < 1e-9:
                null_cells += 1
                null_significant += significant
            if kind == zero_effect:
                designed += 1
                designed_significant += significant
            rows.append((result["seed"], kind, outcome, n, f"{effect:+.4f}", f"{values['estimate']:+.4f}",
                         f"[{values['ci-lower']:+.4f}, {values['ci-upper']:+.4f}]", "yes" if inside else "NO",
                         "yes" if significant else "no", f"{values.get('e-value-ci', '-')}",
                         values["first-month-check"]))
    cells = sum(len(r["found"]) for r in results)
    lines = [f"cells: {cells}; without a truth (left out below): {no_truth}; estimates given: {len(errors)}; "
             f"withheld: {sum(withheld.values())} (" + ", ".join(f"{k}: {v}" for k, v in sorted(withheld.items()))
             + ")"]
    if errors:
        rmse = (sum(e * e for e in errors) / len(errors)) ** 0.5
        lines.append(f"intervals containing the truth: {covered} of {len(errors)} ({covered / len(errors):.0%}); "
                     f"mean bias {sum(errors) / len(errors):+.4f}; RMSE {rmse:.4f}; "
                     f"mean |bias| {sum(abs(e) for e in errors) / len(errors):.4f}")
    lines.append(f"cells with a true effect of 0 reported as significant: {null_significant} of {null_cells} "
                 f"estimates given; the zero-effect intervention ({zero_effect}): {designed_significant} of "
                 f"{designed}")
    return rows, lines


def _reason(statement: str) -> str:
    """A short name for why a figure was withheld, from the operation's own statement."""
    text = statement.lower()
    for key, short in (("first-month check failed", "first-month check failed"),
                       ("pre-trend check failed", "pre-trend check failed"), ("still differ", "unbalanced"),
                       ("too few comparable children who did not", "too few comparisons"),
                       ("too few", "too few treated")):
        if key in text:
            return short
    return statement[:50]


def _write_json(path: Path | None, results: list[dict[str, Any]]) -> None:
    """Every cell so far (rewritten after each seed, so a run stopped early keeps what it measured)."""
    if path is None:
        return
    path.write_text(json.dumps([{"seed": r["seed"], "info": r["info"], "cells": [
        {"intervention": k, "outcome": o, "truth": r["truth"].get((k, o), (0.0, 0))[0],
         "truth_n": r["truth"].get((k, o), (0.0, 0))[1], **v} for (k, o), v in sorted(r["found"].items())]}
        for r in sorted(results, key=lambda r: r["seed"])], indent=1), encoding="utf-8")


def _read_json(path: Path) -> list[dict[str, Any]]:
    results = []
    for seed in json.loads(path.read_text(encoding="utf-8")):
        found, true = {}, {}
        for cell in seed["cells"]:
            key = (cell.pop("intervention"), cell.pop("outcome"))
            true[key] = (cell.pop("truth"), cell.pop("truth_n"))
            found[key] = cell
        results.append({"seed": seed["seed"], "info": seed["info"], "found": found, "truth": true})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds run side by side, each in a process of its own (default 1). Record "
                             "linkage waits on PostgreSQL round trips most of the time, so 2-3 jobs use "
                             "the time one seed spends waiting")
    parser.add_argument("--pg-url", default=harness.DEFAULT_PG_URL, help="PostgreSQL server (a database per seed)")
    parser.add_argument("--db-prefix", default="bench_impact_eval_",
                        help="database name prefix (a database per seed: PREFIX + seed)")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the databases a --keep run left (PREFIX + SEED) instead of importing "
                             "again; the files are generated again (the generator is deterministic) for the truth")
    parser.add_argument("--json", type=Path, help="also write every cell (truth, estimate, interval) to this file, "
                                                  "rewritten after each seed")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="only print the table and summary of the seeds a --json file holds (e.g. of a run "
                             "stopped before its last seed)")
    args = parser.parse_args(argv)
    from synthetic.interventions import ZERO_EFFECT

    if args.report:
        results = _read_json(args.report)
        for result in results:
            print(result["info"])
        _print_summary(results, ZERO_EFFECT)
        return 0
    print(harness.machine_summary(), flush=True)

    started = time.perf_counter()
    call = {"families": args.families, "pg_url": args.pg_url, "prefix": args.db_prefix,
            "reuse": args.reuse, "keep": args.keep}
    results = []
    try:
        if args.jobs <= 1 or len(args.seeds) == 1:
            for seed in args.seeds:
                results.append(run_seed(seed=seed, **call))
                print(results[-1]["info"], flush=True)
                _write_json(args.json, results)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
                for future in as_completed([pool.submit(run_seed, seed=seed, **call) for seed in args.seeds]):
                    results.append(future.result())
                    print(results[-1]["info"], flush=True)
                    _write_json(args.json, results)
    finally:
        # every seed's database, a failed seed's too, after every seed's server is done (their periodic
        # jobs use the database; the pool's exit waits for the seeds still running)
        for seed in args.seeds:
            harness.release_database(args.pg_url, f"{args.db_prefix}{seed}", keep=args.keep)
    _print_summary(results, ZERO_EFFECT)
    print(f"{args.families:,} families x {len(args.seeds)} seeds in {time.perf_counter() - started:.0f} s; "
          f"{harness.load_average()}")
    return 0


def _print_summary(results: list[dict[str, Any]], zero_effect: str) -> None:
    rows, lines = summarise(results, zero_effect)
    harness.print_table("Reported effect against the truth (first plan / care within 12 months of the start)",
                        ("seed", "intervention", "outcome", "truth n", "true effect", "estimate", "95% interval",
                         "covered", "significant", "E-value (interval)", "first-month check"), rows)
    for line in lines:
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
