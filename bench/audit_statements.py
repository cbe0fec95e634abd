"""What PostgreSQL spends planning and running the read and search statements of an audited request.

The exact statements the server sends (a read by id, ``Observation?subject&code&_sort=-date``), built
by the server's own code, with and without the access policy's condition (a MASH practitioner of
``la:201``, purpose CAREMGT, as bench/auth_audit.py's token) and with and without the audit CTE that
writes the compact AuditEvent (audit/pending.py): ``EXPLAIN (ANALYZE)`` of each on random rows of
a database loaded by bench/read_search.py or bench/auth_audit.py, each in a transaction rolled back.
The server plans every statement afresh (``plan_cache_mode=force_custom_plan``, storage/db.py), so
the planning time is paid by every request. Server-side times: independent of the Python client
and far less of the machine's load than a round trip. ``-v`` prints one plan of each.

    .venv/bin/python -m bench.audit_statements --db s5audit_bench --samples 200
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, select, text

from bench import harness
from fhir_server.audit import pending
from fhir_server.auth.policy import visibility
from fhir_server.config import Settings
from fhir_server.fhir import jsonio
from fhir_server.fhir.instants import utcnow
from fhir_server.repository.context import RequestContext
from fhir_server.search.parse import parse_search
from fhir_server.search.query import select_matches
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.db import make_engine
from fhir_server.storage.tables import resource

Make = Callable[[Any, Any], tuple[Any, dict[str, Any]]]


def explain(conn: Connection, stmt: Any, params: dict[str, Any], *, plan: bool) -> tuple[float, float, list[str]]:
    """(planning ms, execution ms, the plan's lines when ``plan``) of ``stmt``, rolled back."""
    expanded = stmt.compile(dialect=conn.dialect).construct_expanded_state(params)
    values = {k: jsonio.dumps(v) if isinstance(v, dict) else v for k, v in expanded.parameters.items()}
    lines: list[str] = []
    with conn.begin() as tx:
        if plan:
            lines = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + expanded.statement, values)]
        out = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + expanded.statement, values).scalar()
        tx.rollback()
    return out[0]["Planning Time"], out[0]["Execution Time"], lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="a database loaded by bench/read_search.py or bench/auth_audit.py")
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("-v", "--verbose", action="store_true", help="print one plan of each statement")
    args = p.parse_args(argv)
    print(f"machine: {harness.machine_summary()}", flush=True)
    engine = make_engine(harness.db_url(args.pg_url, args.db))
    ctx = RequestContext(base_url="http://bench/fhir", client_id="bench-mash", agency="la:201",
                         practitioner="Practitioner/bench-1", scopes=frozenset({"user/*.rs"}), purpose_of_use="CAREMGT",
                         role="mash-practitioner", authenticated=True, issuer="dev")
    vis = visibility(ctx)
    registry = SearchRegistry.load(Settings().profiles_dir)
    rng = random.Random(1)
    rows = []
    with engine.connect() as conn:
        reads = rng.sample(conn.execute(text("SELECT res_type, res_id FROM resource WHERE res_type IN "
                                             "('Patient', 'Observation') AND NOT deleted ORDER BY pk")).all(), args.samples)
        pairs = conn.execute(text("SELECT subject, code FROM bench_plain_obs ORDER BY id LIMIT 5000")).all()
        searches = rng.sample(pairs, min(args.samples, len(pairs)))
        conn.rollback()

        def stamp() -> pending.Stamp:
            now = utcnow()
            return pending.Stamp({"resourceType": "AuditEvent", "id": f"bench-{rng.getrandbits(64):x}"}, now)

        def page(subject: str, code: str, access: Any, numbered: bool = False) -> Any:
            req = parse_search([("subject", subject), ("code", f"http://loinc.org|{code}"), ("_sort", "-date")],
                               registry, ["Observation"])
            req = replace(req, access=access) if access is not None else req
            return select_matches(req, now=utcnow(), snapshot=None, limit=21, numbered=numbered)

        cases: list[tuple[str, list[Any], Make]] = [
            ("read by id (off)", reads, lambda t, i: (select(resource).where(resource.c.res_type == t,
                                                                             resource.c.res_id == i), {})),
            ("read + policy", reads, lambda t, i: (select(resource).where(
                resource.c.res_type == t, resource.c.res_id == i, vis.clause(resource)), {})),
            ("read + audit CTE", reads, lambda t, i: pending.read_statement(stamp(), t, i, None)),
            ("read + audit CTE + policy (on)", reads, lambda t, i: pending.read_statement(stamp(), t, i, vis)),
            ("search (off)", searches, lambda s, c: (page(s, c, None), {})),
            ("search + policy", searches, lambda s, c: (page(s, c, vis), {})),
            ("search + policy, numbered", searches, lambda s, c: (page(s, c, vis, True), {})),
            ("search + audit CTE", searches, lambda s, c: (pending.search_statement(stamp(), page(s, c, None, True), 20), {})),
            ("search + audit CTE + policy (on)", searches,
             lambda s, c: (pending.search_statement(stamp(), page(s, c, vis, True), 20), {})),
        ]
        for label, sample, make in cases:
            times = []
            for n, (a, b) in enumerate(sample):
                planned, ran, lines = explain(conn, *make(a, b), plan=args.verbose and n == 0)
                times.append((planned, ran))
                if lines:
                    print(f"-- {label}\n" + "\n".join(lines))
            rows.append([label, statistics.median(t[0] for t in times), statistics.median(t[1] for t in times),
                         statistics.median(t[0] + t[1] for t in times)])
    engine.dispose()
    harness.print_table(f"PostgreSQL time per statement, p50 of {args.samples} (EXPLAIN ANALYZE, rolled back)",
                        ["statement", "planning ms", "execution ms", "total ms"], rows)
    print(f"after the run: {harness.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
