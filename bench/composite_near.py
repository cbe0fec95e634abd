"""Composite and ``near`` searches on PostgreSQL at scale, directly and at the end of chains and
``_has``: query plans and latencies.

Loads (with SQL, not through the server: only the read side is measured) N Observations each with a
blood-pressure panel indexed for ``component-code-value-quantity`` (systolic and diastolic components)
and ``code-value-quantity`` (one of 50 codes), and N/5 Locations spread over Great Britain; for the
chains N/2 DiagnosticReports (``result`` → the first half of the Observations) and N/10 Patients (each the
``subject`` of ten Observations, with a narrative word of its own in ``idx_text``). Then runs
the engine's own SQL (search/query.py) for typical searches, printing p50/p95 over repeated runs,
the plan (EXPLAIN ANALYZE), and as a baseline the raw indexed SELECT of the first search's index rows.

    .venv/bin/python -m bench.composite_near [--resources 1000000 | --quick] [--keep]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sqlalchemy import text

from fhir_server.search.registry import SearchRegistry
from fhir_server.search.parse import parse_search
from fhir_server.search.query import select_matches
from fhir_server.storage.db import create_schema, make_engine

from .harness import DEFAULT_PG_URL, REPO_ROOT, create_database, release_database

DB_NAME = "bench_composite_near"

LOAD = """
INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, content)
SELECT g, 'Observation', 'o' || g, 1, now(), false, '{"resourceType": "Observation"}'::jsonb
FROM generate_series(1, :n) g;
INSERT INTO idx_composite (resource_pk, res_type, param, grp, anchor_system, anchor_code, low, value, high,
                           system, code, unit)
SELECT g, 'Observation', 'component-code-value-quantity$1', c, 'http://loinc.org',
       CASE c WHEN 0 THEN '8480-6' ELSE '8462-4' END, v - 0.5, v, v + 0.5, 'http://unitsofmeasure.org',
       'mm[Hg]', 'mmHg'
FROM (SELECT g, c, CASE c WHEN 0 THEN 90 + (g::bigint * 7919) % 90 ELSE 50 + (g::bigint * 104729) % 60 END AS v
      FROM generate_series(1, :n) g, generate_series(0, 1) c) s;
INSERT INTO idx_composite (resource_pk, res_type, param, grp, anchor_system, anchor_code, low, value, high)
SELECT g, 'Observation', 'code-value-quantity$1', 0, 'http://loinc.org', 'code-' || (g % 50), v - 0.5, v, v + 0.5
FROM (SELECT g, (g::bigint * 7919) % 1000 AS v FROM generate_series(1, :n) g) s;
INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, content)
SELECT :n + g, 'Location', 'l' || g, 1, now(), false, '{"resourceType": "Location"}'::jsonb
FROM generate_series(1, :n / 5) g;
INSERT INTO idx_geo (resource_pk, res_type, param, latitude, longitude)
SELECT :n + g, 'Location', 'near', 50.0 + ((g::bigint * 7919) % 90000) / 10000.0, -5.5 + ((g::bigint * 104729) % 77000) / 10000.0
FROM generate_series(1, :n / 5) g;
INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, content)
SELECT :n + :n / 5 + g, 'DiagnosticReport', 'r' || g, 1, now(), false, '{"resourceType": "DiagnosticReport"}'::jsonb
FROM generate_series(1, :n / 2) g;
INSERT INTO idx_reference (resource_pk, res_type, param, target_type, target_id)
SELECT :n + :n / 5 + g, 'DiagnosticReport', 'result', 'Observation', 'o' || g
FROM generate_series(1, :n / 2) g;
INSERT INTO resource (pk, res_type, res_id, version_id, last_updated, deleted, content)
SELECT :n + :n / 5 + :n / 2 + g, 'Patient', 'p' || g, 1, now(), false, '{"resourceType": "Patient"}'::jsonb
FROM generate_series(1, :n / 10) g;
INSERT INTO idx_text (resource_pk, res_type, param, words)
SELECT :n + :n / 5 + :n / 2 + g, 'Patient', '_text', ' child word' || g || ' '
FROM generate_series(1, :n / 10) g;
INSERT INTO idx_reference (resource_pk, res_type, param, target_type, target_id)
SELECT g, 'Observation', 'subject', 'Patient', 'p' || (1 + g % (:n / 10))
FROM generate_series(1, :n) g;
SELECT setval(pg_get_serial_sequence('resource', 'pk'), :n + :n / 5 + :n / 2 + :n / 10);
"""

SEARCHES = [
    ("Observation", [("component-code-value-quantity", "http://loinc.org|8480-6$gt178")]),
    ("Observation", [("component-code-value-quantity", "http://loinc.org|8462-4$lt51"),
                     ("component-code-value-quantity", "http://loinc.org|8480-6$ge170")]),
    ("Observation", [("code-value-quantity", "http://loinc.org|code-7$eq7")]),
    ("Location", [("near", "51.50809|-0.12806|2|km")]),
    ("Location", [("near", "53.48|-2.24|25|km")]),
    # chains and _has ending in a composite or _text (search.html#chaining, #has)
    ("DiagnosticReport", [("result.code-value-quantity", "http://loinc.org|code-7$lt50")]),
    ("DiagnosticReport", [("result:Observation.component-code-value-quantity", "http://loinc.org|8480-6$gt178")]),
    ("Patient", [("_has:Observation:subject:code-value-quantity", "http://loinc.org|code-7$lt50")]),
    ("Patient", [("_has:Observation:subject:component-code-value-quantity", "http://loinc.org|8480-6$gt178")]),
    ("Observation", [("subject:Patient._text", "word77")]),
    ("DiagnosticReport", [("result.subject:Patient._text", "word79")]),
]
BASELINE = ("SELECT resource_pk FROM idx_composite WHERE res_type = 'Observation' "
            "AND param = 'component-code-value-quantity$1' AND anchor_code = '8480-6' "
            "AND anchor_system = 'http://loinc.org' AND value > 178 ORDER BY resource_pk LIMIT 21")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 Observations (make bench)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.resources = 100_000
    url = create_database(args.pg_url, DB_NAME)
    engine = make_engine(url)
    try:
        create_schema(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in LOAD.strip().split(";\n"):
                if statement.strip():
                    conn.execute(text(statement), {"n": args.resources})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        print(f"loaded {args.resources:,} Observations and {args.resources // 5:,} Locations "
              f"in {time.perf_counter() - started:.0f} s")
        registry = SearchRegistry.load(Path(REPO_ROOT / "profiles"))
        with engine.connect() as conn:
            print(f"baseline (raw indexed SELECT of the first search's index rows): {_time(conn, text(BASELINE), args.runs)}")
            for rtype, params in SEARCHES:
                req = parse_search(params, registry, [rtype], strict=True)
                stmt = select_matches(req, now=_now(), snapshot=None, limit=21)
                print(f"\n{rtype}?{'&'.join(f'{k}={v}' for k, v in params)}: {_time(conn, stmt, args.runs)}")
                compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                for line in conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + str(compiled)).scalars():
                    print("   ", line)
    finally:
        engine.dispose()
        release_database(args.pg_url, DB_NAME, keep=args.keep)


def _now():  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _time(conn, stmt, runs: int) -> str:  # type: ignore[no-untyped-def]
    times, rows = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = len(conn.execute(stmt).all())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return (f"p50 {statistics.median(times):.2f} ms, p95 {times[int(len(times) * 0.95) - 1]:.2f} ms "
            f"({rows} rows)")


if __name__ == "__main__":
    main()
