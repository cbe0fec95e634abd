"""Risk scores at scale: a full recompute of ``--children`` children (default 100,000) and
``GET [base]/$triage`` pages of 50 over them, against raw PostgreSQL doing the same reads in the same run.

The database (``bench_triage``, or ``…_quick`` with ``--quick``: 10,000 children) is filled in-process
through the repository's batched writer (resource, history, index and outbox rows, as the server writes
them), with rescoring on write turned off, then scored by :func:`triage.recompute.recompute_all` — what
``fhir-server risk recompute`` runs — and timed. Each child is a Patient of one of four agencies
(local authority, police, school, hospital) with a birth date from 0 to 17 years ago and 0–6 coded
Observations of the last two years (CIN assessment factors, police notifications, school absence, ED
concerns); one in eight has an open EpisodeOfCare (CIN, CP plan or looked after) with a careManager.

Some records carry security labels, so the access policy has something to hide: one Patient in 50 is
labelled R (restricted: e.g. a child in a refuge), one in 200 V (very restricted), one police
Observation in 5 SDV (domestic violence).

Then the real server (``fhir-server serve --workers N``) answers ``--rounds`` requests of each
``$triage`` variant, one sequential client → p50/p95/p99: no filter, ``band=red``, ``agency=police``,
``age-max=4&band=amber,red``, page 40 (``_offset=2000``), and CSV — first with authentication off,
then once per ``--roles`` entry with authentication on (``FHIR_AUTH_ENABLED=1``, the development
issuer, the audit trail at its default): a bearer token from ``fhir-server dev-token`` for that role,
agency and purpose of use, so ``$triage`` lists and counts only the children the role may see.
``--reuse`` skips loading and scoring when the database is there (left by ``--keep``).

Baseline, from Python with psycopg: the same two statements the operation runs — ``count(*)`` and
the ordered ``LIMIT 50`` page on ``risk_score`` — with no FHIR logic: the floor for answering at all. For the recompute, the baseline
is reading the same evidence rows (``idx_reference`` join ``resource`` for every Observation and
EpisodeOfCare subject) with one ``SELECT``: the floor for touching the evidence once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness

CB = "https://w3id.org/sg-fhir"
AGENCY_TAG = f"{CB}/CodeSystem/source-agency"
AGENCIES = ["local-authority/901", "police/90", "education/901", "health/RB9"]
CODES = {
    "local-authority/901": [("cin-assessment-factor", c) for c in ("1B", "2B", "3A", "3B", "4B", "10A", "16A", "17A", "21")],
    "police/90": [("risk-factor", c) for c in ("domestic-abuse-child-present", "domestic-abuse-child-not-present",
                                                "missing-episode", "child-arrested", "marac-referral")],
    "education/901": [("risk-factor", c) for c in ("suspension", "permanent-exclusion", "child-missing-education")],
    "health/RB9": [("risk-factor", c) for c in ("ed-safeguarding-concern", "ed-injury", "ed-frequent-attendance")],
}
EPISODES = ["cin", "cin", "cp-plan", "looked-after"]
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# role/agency/purpose measured with authentication on
ROLES = ["mash-practitioner/la:901/safeguarding", "school-dsl/education:901/safeguarding"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10,000 children, 20 rounds")
    p.add_argument("--children", type=int, default=None, help="children (default 100,000; quick 10,000)")
    p.add_argument("--rounds", type=int, default=None, help="requests per $triage variant (default 50)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="recompute processes (default 2 = the reference cores)")
    p.add_argument("--port", type=int, default=8092)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--db", default=None)
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--reuse", action="store_true", help="use the database left by --keep (no load, no recompute)")
    p.add_argument("--roles", default=",".join(ROLES),
                   help="role/agency/purpose entries measured with authentication on, comma-separated "
                        f"(default {','.join(ROLES)}; '' for authentication off only)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--log", type=Path, default=Path("/tmp/bench_triage_server.log"))
    args = p.parse_args(argv)
    args.children = args.children or (10_000 if args.quick else 100_000)
    args.rounds = args.rounds or (20 if args.quick else 50)
    args.db = args.db or ("bench_triage_quick" if args.quick else "bench_triage")
    args.keep = args.keep or args.reuse
    args.roles = [tuple(r.split("/")) for r in args.roles.split(",") if r]
    if any(len(r) != 3 for r in args.roles):
        p.error("--roles entries are role/agency/purpose, e.g. school-dsl/education:901/safeguarding")
    return args


def child_resources(n: int, rng: random.Random, today: date) -> list[dict[str, Any]]:
    agency = AGENCIES[n % 4]
    tag = {"tag": [{"system": AGENCY_TAG, "code": agency}]}
    pid = f"c{n}"
    born = today - timedelta(days=rng.randint(30, 17 * 365))
    patient_meta: dict[str, Any] = dict(tag)
    if n % 50 == 7:
        patient_meta["security"] = [{"system": CONFIDENTIALITY, "code": "R"}]
    elif n % 200 == 11:
        patient_meta["security"] = [{"system": CONFIDENTIALITY, "code": "V"}]
    out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": pid, "meta": patient_meta,
                                  "gender": rng.choice(["male", "female"]),
                                  "birthDate": born.isoformat(),
                                  "identifier": [{"system": f"{CB}/Id/bench/child", "value": pid}]}]
    for i in range(rng.choice([0, 0, 1, 1, 2, 3, 4, 6])):
        system, code = rng.choice(CODES[agency])
        meta = {**tag, "security": [{"system": ACT_CODE, "code": "SDV"}]} \
            if agency.startswith("police") and rng.random() < 0.2 else tag
        out.append({"resourceType": "Observation", "id": f"{pid}-o{i}", "meta": meta, "status": "final",
                    "code": {"coding": [{"system": f"{CB}/CodeSystem/{system}", "code": code}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": (today - timedelta(days=rng.randint(0, 730))).isoformat()})
    if n % 8 == 0:
        out.append({"resourceType": "Practitioner", "id": f"{pid}-sw", "name": [{"family": "Worker", "given": [pid]}]})
        out.append({"resourceType": "EpisodeOfCare", "id": f"{pid}-e", "meta": tag, "status": "active",
                    "type": [{"coding": [{"system": f"{CB}/CodeSystem/episode-type", "code": rng.choice(EPISODES)}]}],
                    "patient": {"reference": f"Patient/{pid}"},
                    "period": {"start": (today - timedelta(days=rng.randint(10, 600))).isoformat()},
                    "careManager": {"reference": f"Practitioner/{pid}-sw"}})
    return out


def load(url: str, children: int, seed: int) -> int:
    """Write every child's resources through the repository's batched writer; returns the count."""
    from sqlalchemy import update

    from fhir_server.config import Settings
    from fhir_server.repository.bulk import DeferredCreates
    from fhir_server.repository.context import RequestContext
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine
    from fhir_server.storage.tables import outbox

    os.environ["FHIR_DATABASE_URL"] = url
    settings = Settings.from_env()
    engine = make_engine(url)
    repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
    ctx = RequestContext.system(settings.base_url)
    rng, today, written = random.Random(seed), date.today(), 0
    for start in range(0, children, 5000):
        with repo.unit_of_work() as uow, DeferredCreates(uow) as writer:
            for n in range(start, min(start + 5000, children)):
                for res in child_resources(n, rng, today):
                    writer.create(ctx, res, res_id=res["id"])
                    written += 1
        print(f"  loaded {min(start + 5000, children):,}/{children:,} children", file=sys.stderr, flush=True)
    with engine.begin() as conn:  # the bench scores with recompute, not with the drain
        conn.execute(update(outbox).values(processed_at=outbox.c.created))
    engine.dispose()
    return written


def recompute(url: str, jobs: int = 1) -> tuple[float, Any]:
    from fhir_server.config import Settings
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine
    from triage.config import load_config
    from triage.recompute import recompute_all

    settings = Settings.from_env()
    engine = make_engine(url)
    repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
    t0 = time.perf_counter()
    stats = recompute_all(repo, load_config(settings.profiles_dir), jobs=jobs)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed, stats


def baseline_evidence(url: str) -> float:
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        rows = conn.execute(
            "SELECT i.target_id, r.content FROM idx_reference i JOIN resource r ON r.pk = i.resource_pk "
            "WHERE ((i.res_type = 'Observation' AND i.param = 'subject') OR "
            "(i.res_type = 'EpisodeOfCare' AND i.param = 'patient')) AND i.target_type = 'Patient' "
            "AND NOT r.deleted").fetchall()
        elapsed = time.perf_counter() - t0
    assert rows
    return elapsed


VARIANTS = [
    ("no filter", "", "TRUE"),
    ("band=red", "band=red", "band = 'red'"),
    ("agency=police", "agency=police", "agencies LIKE '%|police|%'"),
    ("age-max=4, band amber/red", "age-max=4&band=amber,red",
     "birth_date > CURRENT_DATE - INTERVAL '5 years' AND band IN ('amber', 'red')"),
    ("page 41 (_offset=2000)", "_offset=2000", "TRUE"),
]


def baseline_page(url: str, where: str, offset: int, rounds: int) -> list[float]:
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(rounds):
            t0 = time.perf_counter()
            conn.execute(f"SELECT count(*) FROM risk_score WHERE {where}").fetchone()
            conn.execute(f"SELECT * FROM risk_score WHERE {where} ORDER BY score DESC, child_id DESC "
                         f"LIMIT 50 OFFSET {offset}").fetchall()
            times.append(time.perf_counter() - t0)
    return times


def dev_token(url: str, port: int, role: str, agency: str, purpose: str) -> str:
    """A bearer token of the development issuer (``fhir-server dev-token``) for ``role``."""
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_AUTH_DEV_ISSUER": "1",
           "FHIR_BASE_URL": f"http://127.0.0.1:{port}/fhir"}
    out = subprocess.run(harness.cli("dev-token", "--client", f"bench-{role}", "--scope", "system/*.rs",
                                     "--purpose", purpose, "--agency", agency, "--role", role, "--lifetime", "14400"),
                         env=env, check=True, capture_output=True, text=True, cwd=harness.REPO_ROOT)
    return out.stdout.strip().splitlines()[-1]


def time_paths(port: int, paths: list[str], headers: dict[str, str]) -> tuple[list[float], bytes]:
    """GET each path in turn (one keep-alive connection): (seconds per request, the last body)."""
    times, bodies = harness.time_http(port, paths, headers)
    return times, bodies[-1] if bodies else b""


def measure(args: argparse.Namespace, url: str, label: str, headers: dict[str, str],
            baselines: list[dict[str, float]]) -> list[list[Any]]:
    """Every $triage variant (and the CSV) with these headers against the running server; one table row each."""
    rows = []
    for (name, query, _where), base in zip(VARIANTS + [("CSV, no filter", "_format=csv", "")], baselines):
        path = f"/fhir/$triage?_count=50&{query}" if query else "/fhir/$triage?_count=50"
        time_paths(args.port, [path] * 3, headers)  # warm up
        times, body = time_paths(args.port, [path] * args.rounds, headers)
        ours = harness.latency_summary(times)
        total = json.loads(body).get("parameter", [{}])[0].get("valueInteger", "") if "csv" not in query else ""
        rows.append([f"{label}: {name}", total, ours["p50"], ours["p95"], ours["p99"], base["p50"], base["p95"],
                     harness.ratio(ours["p95"], base["p95"])])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(harness.machine_summary())
    os.environ["FHIR_RISK_ON_WRITE"] = "false"
    os.environ["FHIR_LINKAGE_ON_WRITE"] = "false"
    if args.reuse and harness.database_exists(args.pg_url, args.db):
        url = harness.db_url(args.pg_url, args.db)
        harness.migrate(url)
        print(f"reused database {args.db} (loaded and scored by an earlier --keep run)", flush=True)
    else:
        url = harness.create_database(args.pg_url, args.db)
        harness.migrate(url)
        t0 = time.perf_counter()
        written = load(url, args.children, args.seed)
        print(f"loaded {written:,} resources for {args.children:,} children in {time.perf_counter() - t0:.0f} s",
              flush=True)
        harness.analyze(url)
        elapsed, stats = recompute(url, args.jobs)
        floor = baseline_evidence(url)
        harness.analyze(url)
        harness.print_table(f"Full recompute, {args.children:,} children", ["what", "seconds", "children/s", "ratio"], [
            [f"fhir-server risk recompute --jobs {args.jobs}", elapsed, stats.scored / elapsed,
             harness.ratio(elapsed, floor)],
            ["baseline: one SELECT of every evidence row", floor, args.children / floor, "1.0x"]])
        print(f"scored {stats.scored:,}; RiskAssessments written {stats.assessments:,}; "
              f"Flags raised {stats.flags_raised:,}", flush=True)
    baselines = [harness.latency_summary(baseline_page(url, where, 2000 if "_offset" in query else 0, args.rounds))
                 for _name, query, where in VARIANTS]
    baselines.append(baselines[0])  # the CSV reads what the unfiltered page reads
    rows = []
    try:
        os.environ.update(FHIR_AUTH_ENABLED="0", FHIR_AUTH_DEV_ISSUER="0")
        with harness.running_server(url, port=args.port, workers=args.workers, log=args.log):
            rows += measure(args, url, "auth off", {}, baselines)
        print("auth off: done", flush=True)
        for role, agency, purpose in args.roles:
            os.environ.update(FHIR_AUTH_ENABLED="1", FHIR_AUTH_DEV_ISSUER="1")
            token = dev_token(url, args.port, role, agency, purpose)
            headers = {"Authorization": f"Bearer {token}"}
            with harness.running_server(url, port=args.port, workers=args.workers, log=args.log):
                rows += measure(args, url, f"{role} ({purpose})", headers, baselines)
            print(f"{role} ({purpose}): done", flush=True)
    finally:
        os.environ.update(FHIR_AUTH_ENABLED="0", FHIR_AUTH_DEV_ISSUER="0")
        harness.print_table(f"$triage, page of 50 over {args.children:,} children (ms; target p95 <= 300)",
                            ["who: variant", "total", "p50", "p95", "p99", "baseline p50", "baseline p95", "p95 ratio"],
                            rows)
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep, hint=" (rerun with --reuse to skip loading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
