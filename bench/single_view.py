"""``Patient/[id]/$everything`` and ``Patient/[id]/$family-summary`` for a child known to four agencies,
on a large database, against raw PostgreSQL fetching the same rows in the same run.

The database is a copy of ``read_search.py``'s 1,000,000-resource database (``--template``, default
``bench_fhir_1m``: ``CREATE DATABASE … TEMPLATE``, so the original is left as it was) or, without it (or
with ``--quick``), a fresh one loaded with ``--base-resources`` synthetic resources the same way. Into it
go ``--families`` families, written through the repository as the server writes (resource, history,
index and outbox rows), each shaped like the agency mappings' output:

* the child: a master Patient linked (``Patient.link`` seealso) to a local-authority, police, school and
  emergency-department Patient, the LA record linking back; ~300 resources in the compartments of those
  records (CIN and CP episodes and flag, CIN assessment factors, police notifications with involved
  adults, MARAC referrals, school attendance and suspensions, ED attendances with safeguarding concerns,
  RelatedPersons) plus their practitioners and the agencies' Organizations;
* a sibling known to the police and the LA (same adults, same address), with a master record;
* the mother as a health Patient in her own right, in a substance misuse service;
* one import Provenance per agency, targeting the resources of every seeded family (as one file would).

Measured with the real server (``fhir-server serve --workers N``), one sequential client:
``GET …/Patient/<master>/$everything`` and ``GET …/Patient/<master>/$family-summary`` for each family,
``--rounds`` times → p50/p95/p99. Baseline, from Python with psycopg: ``SELECT content::text FROM
resource WHERE pk = ANY(%s)`` with the primary keys of exactly the rows each response holds (one round
trip, no FHIR logic): the floor for getting those rows out of PostgreSQL at all. Also printed: how many
SQL statements one request runs (in-process, counted on the engine), to show that the count does not grow
with the number of resources.
"""
from __future__ import annotations

import argparse
import json
import os
import random
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
RISK = f"{CB}/CodeSystem/risk-factor"
CIN_FACTOR = f"{CB}/CodeSystem/cin-assessment-factor"
EPISODE = f"{CB}/CodeSystem/episode-type"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
AGENCIES = {
    "la": ("local-authority/901", "Local authority 901 children's social care", f"{CB}/Id/la-code", "901"),
    "police": ("police/90", "90 Police", f"{CB}/Id/police-force", "90"),
    "school": ("education/190001", "Bench Primary School", f"{CB}/Id/school-urn", "190001"),
    "health": ("health/RB9", "Bench General Hospital", "https://fhir.nhs.uk/Id/ods-organization-code", "RB9"),
}
FACTORS = ["1B", "2B", "3A", "3B", "4B", "6A", "10A", "16A", "17A", "18C", "22A", "24A"]
META_TABLE = "bench_meta_single_view"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fresh 20,000-resource database, 10 families, 5 rounds")
    p.add_argument("--template", default="bench_fhir_1m",
                   help="database to copy as the base (default bench_fhir_1m, made by read_search.py --reuse)")
    p.add_argument("--base-resources", type=int, default=None,
                   help="load this many synthetic resources instead of copying a template")
    p.add_argument("--families", type=int, default=None, help="families seeded (default 20; quick 10)")
    p.add_argument("--rounds", type=int, default=None, help="requests per family and operation (default 10)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--db", default=None, help="database name (default bench_single_view; quick …_quick)")
    p.add_argument("--reuse", action="store_true", help="keep the database and reuse it when it matches")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (implied by --reuse)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--log", type=Path, default=Path("/tmp/bench_single_view_server.log"))
    args = p.parse_args(argv)
    args.families = args.families or (10 if args.quick else 20)
    args.rounds = args.rounds or (5 if args.quick else 10)
    args.db = args.db or ("bench_single_view_quick" if args.quick else "bench_single_view")
    if args.quick and args.base_resources is None:
        args.base_resources = 20_000
    args.keep = args.keep or args.reuse
    return args


# -- the families -------------------------------------------------------------------------------------

def _tag(agency: str, resource: dict[str, Any]) -> dict[str, Any]:
    code, name, *_ = AGENCIES[agency]
    resource["meta"] = {**resource.get("meta", {}), "source": f"{CB}/agency/{code}",
                        "tag": [{"system": AGENCY_TAG, "code": code, "display": name}]}
    return resource


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def organizations() -> list[dict[str, Any]]:
    return [_tag(key, {"resourceType": "Organization", "id": f"sv-org-{key}", "active": True, "name": name,
                       "identifier": [{"system": system, "value": value}]})
            for key, (_c, name, system, value) in AGENCIES.items()]


def family(n: int, rng: random.Random, today: date) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """One family's resources (ids ``sv<n>-…``), and per agency the references an import would target."""
    p = f"sv{n}-"
    out: list[dict[str, Any]] = []
    by_agency: dict[str, list[str]] = {k: [] for k in AGENCIES}

    def add(agency: str | None, resource: dict[str, Any]) -> None:
        if agency:
            _tag(agency, resource)
            by_agency[agency].append(f"{resource['resourceType']}/{resource['id']}")
        out.append(resource)

    def day(offset: int) -> str:
        return (today - timedelta(days=offset)).isoformat()

    surname = rng.choice(["Whitfield", "Okafor", "Hughes", "Patel", "Kowalski", "Ahmed", "Murphy", "Evans"])
    home = {"line": [f"{rng.randint(1, 200)} Bench Street"], "postalCode": f"LS{rng.randint(1, 29)} {n % 9}AB"}
    child = {"name": [{"family": surname, "given": ["Maya"]}], "birthDate": f"{2010 + n % 8}-0{1 + n % 9}-1{n % 9}",
             "gender": "female"}
    agency_ids = {"la": f"{p}la", "police": f"{p}police", "school": f"{p}school", "health": f"{p}health"}
    add(None, {"resourceType": "Patient", "id": f"{p}master", **child,
               "identifier": [{"system": f"{CB}/Id/master-person", "value": f"SV-{n}"}],
               "link": [{"other": _ref(f"Patient/{i}"), "type": "seealso"} for i in agency_ids.values()]})
    for agency, pid in agency_ids.items():
        extra = {"link": [{"other": _ref(f"Patient/{p}master"), "type": "refer"}]} if agency == "la" else {}
        add(agency, {"resourceType": "Patient", "id": pid, **child, "address": [home], **extra,
                     "identifier": [{"system": f"{CB}/Id/{AGENCIES[agency][3]}/child", "value": f"{n}"}]})
    for key in ("sw", "dsl"):
        add("la" if key == "sw" else "school",
            {"resourceType": "Practitioner", "id": f"{p}pr-{key}",
             "name": [{"family": "Lead", "given": [key.upper()]}]})
    # adults: mother (also a health Patient) and her partner, recorded by the LA and the police
    # adults' dates of birth differ between families (exact name and date of birth make one person)
    mother = {"name": [{"family": surname, "given": ["Claire"]}], "birthDate": _birth(1975, n)}
    add("la", {"resourceType": "RelatedPerson", "id": f"{p}rp-la-mother", "patient": _ref(f"Patient/{p}la"),
               "relationship": [_concept(ROLE, "MTH")], **mother, "address": [home]})
    sibling = f"{p}sib-police"
    for child_id, short in ((f"{p}police", "c"), (sibling, "s")):
        add("police", {"resourceType": "RelatedPerson", "id": f"{p}rp-pol-mother-{short}", "patient": _ref(
            f"Patient/{child_id}"), "relationship": [_concept(ROLE, "MTH")], **mother,
            "identifier": [{"system": f"{CB}/Id/90/person", "value": f"A{n}1"}]})
        add("police", {"resourceType": "RelatedPerson", "id": f"{p}rp-pol-partner-{short}", "patient": _ref(
            f"Patient/{child_id}"), "relationship": [_concept(f"{CB}/CodeSystem/police-relationship",
                                                              "mothers-partner")],
            "name": [{"family": "Benson", "given": ["Kyle"]}], "birthDate": _birth(1980, n),
            "identifier": [{"system": f"{CB}/Id/90/person", "value": f"A{n}2"}]})
    # local authority
    for i, (code, status, start, end) in enumerate((("cin", "finished", 900, 700), ("cin", "active", 330, None),
                                                    ("cp-plan", "active", 250, None), ("early-help", "finished",
                                                                                       600, 420))):
        period = {"start": day(start), **({"end": day(end)} if end else {})}
        add("la", {"resourceType": "EpisodeOfCare", "id": f"{p}eoc-{i}", "status": status,
                   "type": [_concept(EPISODE, code)], "patient": _ref(f"Patient/{p}la"),
                   "managingOrganization": _ref("Organization/sv-org-la"), "period": period,
                   "careManager": _ref(f"Practitioner/{p}pr-sw")})
    add("la", {"resourceType": "Flag", "id": f"{p}flag-cp", "status": "active",
               "code": _concept(f"{CB}/CodeSystem/safeguarding-flag", "cp-plan"), "subject": _ref(f"Patient/{p}la"),
               "period": {"start": day(250)}, "author": _ref("Organization/sv-org-la")})
    for i in range(35):
        add("la", {"resourceType": "Observation", "id": f"{p}cin-{i}", "status": "final",
                   "code": _concept(CIN_FACTOR, rng.choice(FACTORS)), "subject": _ref(f"Patient/{p}la"),
                   "effectiveDateTime": day(rng.randint(10, 1100)), "performer": [_ref("Organization/sv-org-la")]})
    # police
    for i in range(55):
        kind = rng.choice(["domestic-abuse-child-present", "missing-episode", "domestic-abuse-child-not-present",
                           "marac-referral"])
        obs = {"resourceType": "Observation", "id": f"{p}pol-{i}", "status": "final", "code": _concept(RISK, kind),
               "subject": _ref(f"Patient/{p}police"), "effectiveDateTime": f"{day(rng.randint(5, 1000))}T21:40:00Z",
               "performer": [_ref("Organization/sv-org-police")],
               "note": [{"text": "Circumstances: shouting heard by a neighbour."}]}
        if kind.startswith("domestic"):
            obs["extension"] = [{"url": f"{CB}/StructureDefinition/involved-adult", "extension": [
                {"url": "role", "valueCodeableConcept": _concept(f"{CB}/CodeSystem/police-adult-role", role)},
                {"url": "person", "valueReference": _ref(f"RelatedPerson/{p}rp-pol-{who}-c")}]}
                for role, who in (("alleged-perpetrator", "partner"), ("victim", "mother"))]
        if kind == "marac-referral":
            obs["focus"] = [_ref(f"RelatedPerson/{p}rp-pol-mother-c")]
        add("police", obs)
    # school
    for i in range(12):
        add("school", {"resourceType": "Observation", "id": f"{p}att-{i}", "status": "final",
                       "code": _concept(RISK, "school-attendance"), "subject": _ref(f"Patient/{p}school"),
                       "effectivePeriod": {"start": day(90 * i + 90), "end": day(90 * i + 1)},
                       "valueQuantity": {"value": rng.randint(60, 99), "unit": "%"},
                       "component": [{"code": _concept(RISK, "persistent-absence"), "valueBoolean": i % 3 == 0}]})
    for i in range(20):
        add("school", {"resourceType": "Observation", "id": f"{p}susp-{i}", "status": "final",
                       "code": _concept(RISK, "suspension"), "subject": _ref(f"Patient/{p}school"),
                       "effectiveDateTime": day(rng.randint(5, 1000))})
    add("school", {"resourceType": "EpisodeOfCare", "id": f"{p}eoc-school", "status": "active",
                   "type": [_concept(EPISODE, "school-attendance-support")], "patient": _ref(f"Patient/{p}school"),
                   "managingOrganization": _ref("Organization/sv-org-school"), "period": {"start": day(80)},
                   "careManager": _ref(f"Practitioner/{p}pr-dsl")})
    # emergency department
    for i in range(80):
        when = f"{day(rng.randint(1, 1000))}T19:20:00Z"
        add("health", {"resourceType": "Observation", "id": f"{p}ed-{i}", "status": "final",
                       "code": _concept(RISK, "ed-attendance"), "subject": _ref(f"Patient/{p}health"),
                       "effectiveDateTime": when, "performer": [_ref("Organization/sv-org-health")],
                       "hasMember": [_ref(f"Observation/{p}edc-{i}")]})
        add("health", {"resourceType": "Observation", "id": f"{p}edc-{i}", "status": "final",
                       "code": _concept(RISK, rng.choice(["ed-safeguarding-concern", "ed-injury"])),
                       "subject": _ref(f"Patient/{p}health"), "effectiveDateTime": when,
                       "valueCodeableConcept": {"text": "Explanation inconsistent with the injury"}})
    # sibling (police + LA, master) and the mother's own health record
    sib = {"name": [{"family": surname, "given": ["Leo"]}], "birthDate": "2017-09-01"}
    add("police", {"resourceType": "Patient", "id": sibling, **sib,
                   "identifier": [{"system": f"{CB}/Id/90/person", "value": f"S{n}"}]})
    add("la", {"resourceType": "Patient", "id": f"{p}sib-la", **sib, "address": [home]})
    add(None, {"resourceType": "Patient", "id": f"{p}sib-master", **sib,
               "link": [{"other": _ref(f"Patient/{sibling}"), "type": "seealso"},
                        {"other": _ref(f"Patient/{p}sib-la"), "type": "seealso"}]})
    for i in range(20):
        add("police", {"resourceType": "Observation", "id": f"{p}sibobs-{i}", "status": "final",
                       "code": _concept(RISK, "domestic-abuse-child-not-present"),
                       "subject": _ref(f"Patient/{sibling}"),
                       "effectiveDateTime": day(rng.randint(5, 1000))})
    add("health", {"resourceType": "Patient", "id": f"{p}mother-health", **mother, "gender": "female"})
    add("health", {"resourceType": "EpisodeOfCare", "id": f"{p}eoc-mother", "status": "active",
                   "type": [_concept(EPISODE, "substance-misuse-service")],
                   "patient": _ref(f"Patient/{p}mother-health"),
                   "period": {"start": day(60)}})
    return out, by_agency


def _birth(year: int, n: int) -> str:
    return (date(year, 1, 1) + timedelta(days=37 * n)).isoformat()


def provenances(targets: dict[str, list[str]], today: date) -> list[dict[str, Any]]:
    return [{"resourceType": "Provenance", "id": f"sv-prov-{key}", "target": [_ref(t) for t in refs],
             "recorded": f"{today.isoformat()}T06:00:00+00:00",
             "agent": [{"type": _concept("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                         "custodian"), "who": {"reference": f"Organization/sv-org-{key}",
                                                               "display": AGENCIES[key][1]}}],
             "entity": [{"role": "source", "what": {"display": f"{key}_bench_export"}}]}
            for key, refs in targets.items()]


def seed_families(url: str, families: int, seed: int) -> int:
    """Write the families through the repository (the server's write path, one transaction)."""
    from fhir_server.config import Settings
    from fhir_server.repository.context import RequestContext
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine

    rng, today = random.Random(seed), date.today()
    settings = Settings.from_env().with_overrides(database_url=url)
    repo = SqlRepository(make_engine(url), SearchRegistry.load(settings.profiles_dir), settings)
    ctx = RequestContext.system(settings.base_url)
    written = 0
    targets: dict[str, list[str]] = {k: [] for k in AGENCIES}
    with repo.unit_of_work() as uow:
        for res in organizations():
            uow.update(ctx, res["resourceType"], res["id"], res)
        for n in range(families):
            resources, by_agency = family(n, rng, today)
            for res in resources:
                uow.update(ctx, res["resourceType"], res["id"], res)
            written += len(resources)
            for key, refs in by_agency.items():
                targets[key] += refs
        for res in provenances(targets, today):
            uow.update(ctx, res["resourceType"], res["id"], res)
    repo.engine.dispose()
    return written


# -- the database ---------------------------------------------------------------------------------------

def dataset_key(args: argparse.Namespace, base: str) -> str:
    return f"base={base} families={args.families} seed={args.seed}"


def ready_dataset(args: argparse.Namespace) -> tuple[str, str]:
    url = harness.db_url(args.pg_url, args.db)
    use_template = args.base_resources is None and harness.database_exists(args.pg_url, args.template)
    base = f"template:{args.template}" if use_template else f"synthetic:{args.base_resources or 20_000}"
    if args.reuse and harness.database_exists(args.pg_url, args.db):
        with psycopg.connect(url) as conn:
            try:
                row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'dataset'").fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
        if row and row[0] == dataset_key(args, base):
            harness.migrate(url)
            return url, f"reused database {args.db} ({row[0]})"
    harness.drop_database(args.pg_url, args.db)
    start = time.perf_counter()
    if use_template:
        with psycopg.connect(harness.admin_url(args.pg_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{args.db}" TEMPLATE "{args.template}"')
        harness.migrate(url)
        how = f"copied {args.template}"
    else:
        from bench.read_search import load_repository
        harness.create_database(args.pg_url, args.db)
        harness.migrate(url)
        load_repository(url, args.base_resources or 20_000, args.seed, 2)
        how = f"loaded {args.base_resources or 20_000:,} synthetic resources"
    written = seed_families(url, args.families, args.seed)
    harness.analyze(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value text)")
        conn.execute(f"INSERT INTO {META_TABLE} VALUES ('dataset', %s) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (dataset_key(args, base),))
    return url, (f"{how}, seeded {args.families} families ({written:,} resources) in "
                 f"{time.perf_counter() - start:.0f} s")


# -- measuring -----------------------------------------------------------------------------------------

def row_keys(body: bytes) -> list[tuple[str, str]]:
    """(type, id) of the stored resources in a response (the document's Composition and Device are
    made per request, not stored)."""
    bundle = json.loads(body)
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])
            if not e["fullUrl"].startswith("urn:uuid:")]


def time_baseline(url: str, key_sets: list[list[tuple[str, str]]], rounds: int) -> list[float]:
    """One ``SELECT content::text … WHERE pk = ANY(%s)`` per response, for the same rows."""
    times: list[float] = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        pk_sets = []
        for keys in key_sets:
            rows = conn.execute("SELECT pk FROM resource WHERE (res_type, res_id) IN "
                                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                                ([t for t, _ in keys], [i for _, i in keys])).fetchall()
            pk_sets.append([r[0] for r in rows])
        for pks in pk_sets[: min(5, len(pk_sets))]:  # warm-up
            conn.execute("SELECT content::text FROM resource WHERE pk = ANY(%s)", (pks,)).fetchall()
        for _ in range(rounds):
            for pks in pk_sets:
                t0 = time.perf_counter()
                rows = conn.execute("SELECT content::text FROM resource WHERE pk = ANY(%s)", (pks,)).fetchall()
                times.append(time.perf_counter() - t0)
                assert len(rows) == len(pks)
    return times


def count_statements(url: str, paths: list[str]) -> dict[str, int]:
    """SQL statements one request runs, counted on the engine of an in-process app."""
    from sqlalchemy import event

    from fhir_server import create_app
    from fhir_server.config import Settings

    settings = Settings.from_env().with_overrides(database_url=url)
    app = create_app(settings)
    engine = app.extensions["fhir"].engine
    counted: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: counted.append(a[2]))
    client = app.test_client()
    out = {}
    for path in paths:
        client.get(path)  # warm caches (search registry, profiles)
        counted.clear()
        res = client.get(path)
        assert res.status_code == 200, res.data[:300]
        out[path] = len(counted)
    engine.dispose()
    return out


def measure(args: argparse.Namespace, url: str) -> None:
    masters = [f"sv{n}-master" for n in range(args.families)]
    every = [f"/fhir/Patient/{m}/$everything" for m in masters]
    summaries = [f"/fhir/Patient/{m}/$family-summary" for m in masters]
    with harness.running_server(url, port=args.port, workers=args.workers, log=args.log) as server:
        print(f"server: {' '.join(server.command)}", flush=True)
        harness.time_http(args.port, every[:5] + summaries[:5])  # warm-up
        every_s, every_bodies = harness.time_http(args.port, every * args.rounds)
        summary_s, summary_bodies = harness.time_http(args.port, summaries * args.rounds)
    every_keys = [row_keys(b) for b in every_bodies[:len(every)]]
    summary_keys = [row_keys(b) for b in summary_bodies[:len(summaries)]]
    base_every = time_baseline(url, every_keys, args.rounds)
    base_summary = time_baseline(url, summary_keys, args.rounds)
    statements = count_statements(url, [every[0], summaries[0]])

    first = json.loads(every_bodies[0])
    matches = sum(1 for e in first["entry"] if e["search"]["mode"] == "match")
    agencies = {t["code"] for e in first["entry"] for t in e["resource"].get("meta", {}).get("tag", [])
                if t.get("system") == AGENCY_TAG}
    e, be = harness.latency_summary(every_s), harness.latency_summary(base_every)
    s, bs = harness.latency_summary(summary_s), harness.latency_summary(base_summary)
    target = 150.0
    rows = [
        ["$everything: server (HTTP)", e["p50"], e["p95"], e["p99"], "met" if e["p95"] <= target else "MISSED"],
        ["$everything: same rows, SELECT by pk", be["p50"], be["p95"], be["p99"], ""],
        ["$everything ratio server / baseline", harness.ratio(e["p50"], be["p50"]), harness.ratio(e["p95"], be["p95"]),
         harness.ratio(e["p99"], be["p99"]), ""],
        ["$family-summary: server (HTTP)", s["p50"], s["p95"], s["p99"], "met" if s["p95"] <= target else "MISSED"],
        ["$family-summary: same rows, SELECT by pk", bs["p50"], bs["p95"], bs["p99"], ""],
        ["$family-summary ratio server / baseline", harness.ratio(s["p50"], bs["p50"]),
         harness.ratio(s["p95"], bs["p95"]), harness.ratio(s["p99"], bs["p99"]), ""],
    ]
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
    harness.print_table(
        f"Single view on {n:,} resources ({args.workers} workers, 1 sequential client; {args.families} families x "
        f"{args.rounds} rounds; the child: {matches} compartment resources across {len(agencies)} agencies, "
        f"$everything {len(every_keys[0])} entries, $family-summary {len(summary_keys[0])} stored resources + "
        f"Composition and Device, {len(summary_bodies[0]) // 1024} KiB)",
        ["what", "p50 ms", "p95 ms", "p99 ms", f"target p95 <= {target:.0f} ms"], rows)
    harness.print_table("SQL statements per request (in-process, counted on the engine)", ["request", "statements"],
                        [[p.rsplit("/", 1)[1], c] for p, c in statements.items()])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["FHIR_AUTH_ENABLED"] = "0"  # the operations are measured, not token checks
    print(f"machine: {harness.machine_summary()}", flush=True)
    url, how = ready_dataset(args)
    print(how, flush=True)
    try:
        measure(args, url)
    finally:
        harness.release_database(args.pg_url, args.db, keep=args.keep, hint=" (rerun with --reuse to skip loading)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
