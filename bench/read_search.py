"""Read-by-id and a typical search over HTTP on a large database, against raw PostgreSQL in the same run.

The database (``--resources``, default 1,000,000) is loaded through the repository's own write path
(``repository.bulk.DeferredCreates`` over ``SqlRepository.unit_of_work()``, as transaction Bundles
use: the same resource, history, search-index and outbox rows the server writes for a POST), from ``--load-procs`` processes, one transaction per 1,000 resources, after
``validate_resource`` as the server does. ``--load-mode http`` loads through the server's transaction
Bundles instead. Keep it between runs with ``--reuse`` (loading 1M takes minutes).

Measured, with the real server started with ``--workers`` workers:

* ``GET /fhir/<type>/<id>`` for ``--reads`` random resources, one client, sequential → p50/p95/p99;
* ``GET /fhir/Observation?subject=Patient/<id>&code=http://loinc.org|<code>&_sort=-date`` for
  ``--searches`` random (patient, code) pairs → p50/p95/p99 (with ``--filter``, the same search as
  ``_filter=subject re Patient/<id> and code eq http://loinc.org|<code>``);
* the same reads from ``--clients`` threads → requests/s.

Baselines, from Python with psycopg in the same run, on plain tables holding the same data:
``SELECT content::text FROM bench_plain WHERE id = $1`` (primary key) and
``SELECT content::text FROM bench_plain_obs WHERE subject = $1 AND code_system = $2 AND code = $3
ORDER BY effective DESC LIMIT 20`` (one b-tree index on exactly those columns).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness
from bench.synthetic import resource_stream, transaction_bundles

CHUNK = 1000  # resources per load transaction (and per seeded chunk of synthetic data)
META_TABLE = "bench_meta"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20,000 resources, 500 reads, 200 searches")
    p.add_argument("--resources", type=int, default=None, help="database size (default 1,000,000; quick 20,000)")
    p.add_argument("--reads", type=int, default=None, help="random reads by id (default 2,000; quick 500)")
    p.add_argument("--searches", type=int, default=None, help="random searches (default 1,000; quick 200)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2 = cores)")
    p.add_argument("--clients", type=int, default=2, help="client threads for the throughput run (default 2)")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL, help="PostgreSQL server (trust auth)")
    p.add_argument("--db", default=None, help="database name (default bench_fhir_1m; quick bench_fhir_quick)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the database if it already holds this data set (else load it), and keep it")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (implied by --reuse)")
    p.add_argument("--load-only", action="store_true", help="load (or check) the database, measure nothing")
    p.add_argument("--load-mode", choices=["repository", "http"], default="repository")
    p.add_argument("--load-procs", type=int, default=2, help="loader processes (default 2)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--filter", action="store_true",
                   help="send the search as _filter=subject re … and code eq … (search_filter.html)")
    p.add_argument("--log", type=Path, default=Path("/tmp/bench_read_server.log"), help="server output")
    args = p.parse_args(argv)
    quick = args.quick
    args.resources = args.resources or (20_000 if quick else 1_000_000)
    args.reads = args.reads or (500 if quick else 2_000)
    args.searches = args.searches or (200 if quick else 1_000)
    args.db = args.db or ("bench_fhir_quick" if quick else "bench_fhir_1m")
    args.keep = args.keep or args.reuse
    return args


# -- loading --------------------------------------------------------------------------------------

_repo: Any = None


def _chunk_seed(seed: int, chunk: int) -> int:
    return seed * 1_000_003 + chunk


def _load_init(url: str) -> None:
    global _repo
    from fhir_server.config import Settings
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine

    settings = Settings.from_env().with_overrides(database_url=url)
    _repo = SqlRepository(make_engine(url, pool_size=1), SearchRegistry.load(settings.profiles_dir), settings)


def _load_chunk(job: tuple[int, int, int]) -> int:
    """Validate and create one chunk of resources in one transaction, as a POST would."""
    from fhir_server.fhir.validation import validate_resource
    from fhir_server.repository.context import RequestContext

    chunk, size, seed = job
    ctx = RequestContext.system(_repo.settings.base_url)
    with _repo.unit_of_work() as uow:
        writer = _batched(uow)
        for res in resource_stream(size, seed=_chunk_seed(seed, chunk)):
            res_id = res.pop("id")
            writer.create(ctx, validate_resource(res), res_id=res_id)
        if writer is not uow:
            writer.flush()
    return size


def _batched(uow: Any) -> Any:
    """The batched create path transactions use (repository/bulk.py) where it exists: the same rows
    as ``UnitOfWork.create``, written in multi-row statements."""
    try:
        from fhir_server.repository.bulk import DeferredCreates
    except ImportError:
        return uow
    return DeferredCreates(uow)


def load_repository(url: str, total: int, seed: int, procs: int) -> None:
    jobs = [(c, min(CHUNK, total - c * CHUNK), seed) for c in range((total + CHUNK - 1) // CHUNK)]
    done, start = 0, time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(procs, _load_init, (url,)) as pool:
        for n in pool.imap_unordered(_load_chunk, jobs):
            done += n
            if done % 50_000 < CHUNK or done == total:
                rate = done / (time.perf_counter() - start)
                print(f"  loaded {done:,}/{total:,} ({rate:,.0f} resources/s)", flush=True)


def load_http(args: argparse.Namespace, url: str) -> None:
    from bench.ingest import post_bundles

    with harness.running_server(url, port=args.port, workers=args.workers, log=args.log):
        done, start = 0, time.perf_counter()
        bundles = transaction_bundles(args.resources, CHUNK, seed=args.seed)
        while True:
            batch = [json.dumps(b, separators=(",", ":")).encode() for _, b in zip(range(50), bundles)]
            if not batch:
                break
            post_bundles(args.port, batch, args.clients)
            done += len(batch) * CHUNK
            print(f"  loaded {min(done, args.resources):,}/{args.resources:,} "
                  f"({done / (time.perf_counter() - start):,.0f} resources/s)", flush=True)


def drain_outbox(url: str) -> int:
    """Mark the outbox rows processed as the server's after-commit drain would (fhir_server.worker),
    so the database is in the state a server that had ingested the same data would leave it."""
    try:
        from fhir_server.worker import drain
    except ImportError:
        return 0
    from fhir_server.storage.db import make_engine

    engine = make_engine(url)
    try:
        return drain(engine, limit=10_000)
    finally:
        engine.dispose()


def build_baseline_tables(url: str) -> None:
    """Plain tables with the same current resources: (id, type, jsonb) and an Observation table with
    the searched columns extracted and one b-tree index over exactly them."""
    statements = [
        "DROP TABLE IF EXISTS bench_plain, bench_plain_obs",
        "CREATE TABLE bench_plain (id text PRIMARY KEY, res_type text NOT NULL, content jsonb NOT NULL)",
        # the server's own resources (SubscriptionTopic, …) may share an id with another type's
        "INSERT INTO bench_plain SELECT res_id, res_type, content FROM resource WHERE NOT deleted "
        "ON CONFLICT DO NOTHING",
        """CREATE TABLE bench_plain_obs (id text PRIMARY KEY, subject text, code_system text, code text,
               effective timestamptz, content jsonb NOT NULL)""",
        """INSERT INTO bench_plain_obs
           SELECT res_id, content->'subject'->>'reference', content->'code'->'coding'->0->>'system',
                  content->'code'->'coding'->0->>'code', (content->>'effectiveDateTime')::timestamptz, content
           FROM resource WHERE res_type = 'Observation' AND NOT deleted""",
        "CREATE INDEX ix_bench_plain_obs_search ON bench_plain_obs (subject, code, code_system, effective DESC)",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def dataset_key(args: argparse.Namespace) -> str:
    return f"resources={args.resources} seed={args.seed} chunk={CHUNK} mode={args.load_mode}"


def ready_dataset(args: argparse.Namespace) -> tuple[str, str]:
    """The database URL, loading it unless ``--reuse`` finds it already complete; and what was done."""
    url = harness.db_url(args.pg_url, args.db)
    if args.reuse and harness.database_exists(args.pg_url, args.db):
        with psycopg.connect(url) as conn:
            try:
                row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'dataset'").fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
        if row and row[0] == dataset_key(args):
            how = harness.migrate(url)  # the code may need a newer schema than the one loaded
            harness.analyze(url)
            return url, f"reused database {args.db} ({dataset_key(args)}); schema brought up to date by {how}"
        print(f"database {args.db} exists but does not hold {dataset_key(args)}: reloading", flush=True)
    url = harness.create_database(args.pg_url, args.db)
    how = harness.migrate(url)
    print(f"database {args.db} created (schema by {how}); loading {args.resources:,} resources "
          f"via {args.load_mode}", flush=True)
    start = time.perf_counter()
    if args.load_mode == "repository":
        load_repository(url, args.resources, args.seed, args.load_procs)
    else:
        load_http(args, url)
    load_s = time.perf_counter() - start
    drained = drain_outbox(url)
    print(f"drained {drained:,} outbox rows; building baseline tables and running VACUUM ANALYZE", flush=True)
    build_baseline_tables(url)
    harness.analyze(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {META_TABLE} (key text PRIMARY KEY, value text)")
        conn.execute(f"INSERT INTO {META_TABLE} VALUES ('dataset', %s), ('load_seconds', %s)",
                     (dataset_key(args), f"{load_s:.0f}"))
    return url, (f"loaded {args.resources:,} resources via {args.load_mode} with {args.load_procs} processes "
                 f"in {load_s:.0f} s ({args.resources / load_s:,.0f} resources/s)")


# -- sampling and timing --------------------------------------------------------------------------


def sample(url: str, seed: int, reads: int, searches: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Random (type, id) pairs to read, and (patient reference, LOINC code) pairs to search."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        max_pk = conn.execute("SELECT max(pk) FROM resource").fetchone()[0]  # type: ignore[index]
        pks = rng.sample(range(1, max_pk + 1), min(max_pk, reads * 2))
        # only the benchmark's own data (migrate also stores the server's conformance resources; a
        # database reused after bench/auth_audit.py holds AuditEvents, whose reads seal the trail first)
        ids = conn.execute("SELECT res_type, res_id FROM resource WHERE pk = ANY(%s) AND NOT deleted "
                           "AND res_type NOT IN ('SearchParameter', 'OperationDefinition', 'CodeSystem', "
                           "'ValueSet', 'StructureDefinition', 'AuditEvent') ORDER BY pk", (pks,)).fetchall()
        rng.shuffle(ids)
        pairs = conn.execute(
            """SELECT content->'subject'->>'reference', content->'code'->'coding'->0->>'code' FROM resource
               WHERE pk = ANY(%s) AND res_type = 'Observation' ORDER BY pk""",
            (rng.sample(range(1, max_pk + 1), min(max_pk, searches * 4)),)).fetchall()
        rng.shuffle(pairs)
    return [tuple(r) for r in ids[:reads]], [tuple(p) for p in pairs[:searches]]  # type: ignore[misc]


def search_path(subject: str, code: str, as_filter: bool = False) -> str:
    if as_filter:  # the same search as one _filter expression
        expr = f"subject re {subject} and code eq http://loinc.org|{code}"
        return f"/fhir/Observation?_filter={quote(expr, safe='')}&_sort=-date"
    return (f"/fhir/Observation?subject={quote(subject, safe='/')}"
            f"&code={quote('http://loinc.org|' + code, safe='')}&_sort=-date")


def throughput_http(port: int, paths: list[str], clients: int) -> float:
    """Requests per second with ``clients`` threads sharing out ``paths``."""
    parts = [paths[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=harness.time_http, args=(port, part)) for part in parts]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(paths) / (time.perf_counter() - start)


def time_sql(url: str, sql: str, params: list[tuple[Any, ...]]) -> tuple[list[float], list[int]]:
    times, counts = [], []
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        for p in params:
            t0 = time.perf_counter()
            rows = conn.execute(sql, p).fetchall()
            times.append(time.perf_counter() - t0)
            counts.append(len(rows))
    return times, counts


PK_SELECT = "SELECT content::text FROM bench_plain WHERE id = %s"
OBS_SELECT = ("SELECT content::text FROM bench_plain_obs WHERE subject = %s AND code_system = %s AND code = %s "
              "ORDER BY effective DESC LIMIT 20")


def measure(args: argparse.Namespace, url: str) -> None:
    ids, pairs = sample(url, args.seed, args.reads, args.searches)
    read_paths = [f"/fhir/{t}/{i}" for t, i in ids]
    search_paths = [search_path(s, c, args.filter) for s, c in pairs]
    pk_params = [(i,) for _t, i in ids]
    obs_params = [(s, "http://loinc.org", c) for s, c in pairs]

    with harness.running_server(url, port=args.port, workers=args.workers, log=args.log) as server:
        print(f"server: {' '.join(server.command)}", flush=True)
        harness.time_http(args.port, read_paths[:200] + search_paths[:50])  # warm-up: imports, pools, caches
        time_sql(url, PK_SELECT, pk_params[:200])
        read_s, _ = harness.time_http(args.port, read_paths)
        search_s, search_bodies = harness.time_http(args.port, search_paths)
        read_rps = throughput_http(args.port, read_paths, args.clients)
        search_rps = throughput_http(args.port, search_paths, args.clients)
    base_read_s, found = time_sql(url, PK_SELECT, pk_params)
    base_search_s, base_counts = time_sql(url, OBS_SELECT, obs_params)
    assert all(found), "baseline missed an id"

    server_counts = [len(json.loads(b).get("entry", [])) for b in search_bodies]
    if server_counts != base_counts:
        diff = sum(a != b for a, b in zip(server_counts, base_counts))
        print(f"WARNING: {diff} searches returned a different number of matches than the baseline", flush=True)
    r, br = harness.latency_summary(read_s), harness.latency_summary(base_read_s)
    s, bs = harness.latency_summary(search_s), harness.latency_summary(base_search_s)
    rows = [
        ["read by id: server (HTTP)", r["p50"], r["p95"], r["p99"], "met" if r["p50"] <= 2 else "MISSED (p50 <= 2 ms)"],
        ["read by id: PK SELECT (psycopg)", br["p50"], br["p95"], br["p99"], ""],
        ["read ratio server / baseline", harness.ratio(r["p50"], br["p50"]), harness.ratio(r["p95"], br["p95"]),
         harness.ratio(r["p99"], br["p99"]), ""],
        ["search: server (HTTP" + (", _filter)" if args.filter else ")"), s["p50"], s["p95"], s["p99"], "met" if s["p50"] <= 10 else "MISSED (p50 <= 10 ms)"],
        ["search: indexed SELECT (psycopg)", bs["p50"], bs["p95"], bs["p99"], ""],
        ["search ratio server / baseline", harness.ratio(s["p50"], bs["p50"]), harness.ratio(s["p95"], bs["p95"]),
         harness.ratio(s["p99"], bs["p99"]), ""],
    ]
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
    mean_matches = sum(server_counts) / max(1, len(server_counts))
    harness.print_table(
        f"Latency on {n:,} resources ({args.workers} workers, 1 sequential client; {len(read_paths):,} reads, "
        f"{len(search_paths):,} searches, {mean_matches:.1f} matches per search on average)",
        ["what", "p50 ms", "p95 ms", "p99 ms", "target"], rows)
    harness.print_table(
        f"Throughput ({args.workers} workers, {args.clients} client threads)", ["what", "requests/s"],
        [["read by id", read_rps], ["search", search_rps],
         ["read by id: PK SELECT, 1 connection", len(base_read_s) / sum(base_read_s)],
         ["search: indexed SELECT, 1 connection", len(base_search_s) / sum(base_search_s)]])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {harness.machine_summary()}", flush=True)
    url, how = ready_dataset(args)
    print(how, flush=True)
    try:
        if not args.load_only:
            measure(args, url)
    finally:
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep, hint=" (rerun with --reuse to skip loading)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
