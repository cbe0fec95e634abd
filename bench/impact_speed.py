"""``$intervention-impact`` speed over a large population on PostgreSQL (issue 7: an evaluation over
100,000 children in <= 60 s; an estimate for one child in <= 2 s).

Loads ``--children`` children of the seeded population of impact/simulation.py (Patients, concern
Observations, intervention and child protection plan EpisodeOfCare resources) into a fresh database
through transaction Bundles, starts the real server (one worker, so the timings show the cold call
that reads the data and the warm calls that reuse it until the database changes), and times over
HTTP: an evaluation of two interventions on all outcomes, and an estimate for one child. The
raw-PostgreSQL baseline is the SQL that reads the study data (concern events and episodes from the
index tables), run directly with psycopg: the part of the work no implementation can skip.

    python bench/impact_speed.py --children 100000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench import harness  # noqa: E402

DATABASE = "bench_impact"
# The loader and the server send their after-commit work (linking, risk scoring, subscriptions) to a
# broker queue no worker reads, so that scoring 100,000 children does not run beside the timed calls.
IDLE_BROKER = "redis://127.0.0.1:6379/15"
EVALUATE = "/fhir/$intervention-impact?mode=evaluate&intervention=parenting-programme,mentoring"


def load(url: str, children: int, broker: str) -> tuple[int, float]:
    from fhir_server import create_app
    from fhir_server.config import Settings
    from impact import simulation

    entries, _truth = simulation.population(children, seed=11)
    client = create_app(Settings(database_url=url, auth_enabled=False, broker_url=broker,
                                 celery_queue=os.environ.get("FHIR_CELERY_QUEUE", "celery"))).test_client()
    started = time.perf_counter()
    for bundle in simulation.bundles(entries):
        r = client.post("/fhir", data=json.dumps(bundle), content_type="application/fhir+json")
        if r.status_code != 200:
            raise SystemExit(f"load failed: {r.status_code} {r.get_data(as_text=True)[:400]}")
    return len(entries), time.perf_counter() - started


def baseline(url: str) -> float:
    """The study-data reads as plain SQL (compiled from impact/data.py's queries)."""
    from sqlalchemy.dialects import postgresql

    from fhir_server.storage.db import make_engine
    from impact import data

    engine = make_engine(url)
    captured: list[str] = []
    with engine.connect() as conn:
        original = conn.execute

        def capture(statement, *args, **kwargs):  # type: ignore[no-untyped-def]
            captured.append(str(statement.compile(dialect=postgresql.dialect(),
                                                  compile_kwargs={"literal_binds": True})))
            return original(statement, *args, **kwargs)

        conn.execute = capture  # type: ignore[method-assign]
        data.read_records(conn)
    engine.dispose()
    with psycopg.connect(url, autocommit=True) as raw:
        started = time.perf_counter()
        for sql in captured:
            raw.execute(sql.replace("%", "%%")).fetchall()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    parser.add_argument("--database", default=DATABASE, help="the PostgreSQL database to load (created afresh)")
    parser.add_argument("--broker", default=IDLE_BROKER,
                        help="a Redis URL for the after-commit tasks nobody runs; with --queue only that queue is "
                             "emptied at the end, otherwise the whole Redis database")
    parser.add_argument("--queue", default=None, help="the Celery queue name for those tasks (shared Redis)")
    parser.add_argument("--reuse", action="store_true", help="use the database left by --keep")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args(argv)
    print(harness.machine_summary())
    os.environ["FHIR_BROKER_URL"] = args.broker  # the server's too (harness.running_server passes the environment)
    if args.queue:
        os.environ["FHIR_CELERY_QUEUE"] = args.queue
    try:
        return _run(args)
    finally:
        import redis

        queued = redis.Redis.from_url(args.broker)  # the queued tasks nobody was meant to run
        if args.queue:
            queued.delete(args.queue)
        else:
            queued.flushdb()


def _run(args: argparse.Namespace) -> int:
    if args.reuse and harness.database_exists(args.pg_url, args.database):
        url = harness.db_url(args.pg_url, args.database)
        print(f"reusing {args.database}")
    else:
        url = harness.create_database(args.pg_url, args.database)
        harness.migrate(url)
        count, seconds = load(url, args.children, args.broker)
        print(f"loaded {args.children:,} children ({count:,} resources) in {seconds:.0f} s")
        harness.analyze(url)
    raw = baseline(url)
    with harness.running_server(url, port=args.port, workers=1) as server:
        evaluate, _ = harness.time_http(server.port, [EVALUATE] * 3)
        status, body = harness.request(server.port, "GET", "/fhir/Observation?_count=1&_elements=subject")
        child = json.loads(body)["entry"][0]["resource"]["subject"]["reference"]
        estimate, _ = harness.time_http(
            server.port, [f"/fhir/$intervention-impact?mode=estimate&intervention=parenting-programme"
                          f"&patient={child}"] * 3)
    rows = [("evaluate 2 interventions x 4 outcomes, cold (reads the data)", f"{evaluate[0]:.2f}",
             harness.ratio(evaluate[0], raw)),
            ("evaluate, warm (data unchanged)", f"{min(evaluate[1:]):.2f}", harness.ratio(min(evaluate[1:]), raw)),
            ("estimate for one child, warm", f"{min(estimate):.2f}", harness.ratio(min(estimate), raw)),
            ("raw PostgreSQL: the study-data SELECTs", f"{raw:.2f}", "1.0x")]
    harness.print_table(f"$intervention-impact over {args.children:,} children (seconds)",
                        ("call", "seconds", "vs raw SQL"), rows)
    harness.release_database(args.pg_url, args.database, keep=args.keep, hint=" (rerun with --reuse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
