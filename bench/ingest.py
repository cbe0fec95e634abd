"""Transaction-Bundle ingest over HTTP against a raw-PostgreSQL baseline, measured in the same run.

What is measured (all in one fresh database, created here and dropped unless ``--keep``):

1. **Server**: ``--total`` synthetic resources POSTed to ``/fhir`` as transaction Bundles of
   ``--bundle-size`` entries (urn:uuid references between entries), by ``--clients`` client threads,
   each on one keep-alive connection, to the real server started with ``--workers`` workers.
   Bodies are serialised before the clock starts; the clock stops when the last Bundle's response
   has arrived (every response must be 200).
2. **Baselines**: the same resource JSON (same bytes) into a plain ``(id, type, jsonb)`` table, one
   transaction per Bundle-sized batch, with the same number of client threads:
   ``COPY … FROM STDIN`` and a multi-row ``INSERT … VALUES (…), (…)``.
3. **Peak memory** of one ``--peak-bundle``-entry transaction: the server is restarted with one
   worker (so VmHWM starts from a fresh process), warmed up, then VmHWM of the worker is read from
   /proc/<pid>/status before and after the Bundle.

Run ``python -m bench.ingest --quick`` for a quick look, ``python -m bench.ingest`` for the full run.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness
from bench.synthetic import transaction_bundles

PLAIN_TABLE = "bench_plain_resource"
MINIMAL = {"Prefer": "return=minimal"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20,000 resources and a 5,000-entry peak-memory Bundle")
    p.add_argument("--total", type=int, default=None, help="resources to ingest (default 50,000; quick 20,000)")
    p.add_argument("--bundle-size", type=int, default=1000, help="entries per transaction Bundle (default 1000)")
    p.add_argument("--peak-bundle", type=int, default=None,
                   help="entries of the single Bundle whose peak memory is measured (default 10,000; 0 skips)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2 = cores)")
    p.add_argument("--clients", type=int, default=2, help="client threads posting Bundles (default 2)")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL, help="PostgreSQL server (trust auth)")
    p.add_argument("--db", default="bench_fhir_ingest", help="database to create (dropped first if present)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log", type=Path, default=Path("/tmp/bench_ingest_server.log"), help="server output")
    args = p.parse_args(argv)
    if args.total is None:
        args.total = 20_000 if args.quick else 50_000
    if args.peak_bundle is None:
        args.peak_bundle = 5_000 if args.quick else 10_000
    return args


def post_bundles(port: int, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """POST every body to /fhir from ``clients`` threads; returns (elapsed seconds, per-Bundle seconds)."""
    todo: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in bodies:
        todo.put(body)
    latencies: list[float] = []
    errors: list[str] = []

    def work() -> None:
        client = harness.Client(port)
        try:
            while not errors:
                try:
                    body = todo.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                status, data = client.call("POST", "/fhir", body, MINIMAL)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"HTTP {status}: {data[:600]!r}")
        finally:
            client.close()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a transaction failed: {errors[0]}")
    return elapsed, latencies


def plain_rows(bundles: list[dict[str, Any]]) -> list[list[tuple[str, str, str]]]:
    """(id, type, json) per resource, batched like the Bundles: the same JSON the server received,
    with the id the client chose (the urn:uuid) set."""
    batches = []
    for bundle in bundles:
        rows = []
        for entry in bundle["entry"]:
            res = dict(entry["resource"])
            res["id"] = entry["fullUrl"].rsplit(":", 1)[-1]
            rows.append((res["id"], res["resourceType"], json.dumps(res, separators=(",", ":"))))
        batches.append(rows)
    return batches


def run_parallel(url: str, batches: list[list[tuple[str, str, str]]], clients: int, write_batch: Any) -> float:
    """Write each batch in its own transaction from ``clients`` threads; elapsed seconds."""
    todo: queue.SimpleQueue[list[tuple[str, str, str]]] = queue.SimpleQueue()
    for b in batches:
        todo.put(b)

    def work() -> None:
        with psycopg.connect(url) as conn:
            while True:
                try:
                    batch = todo.get_nowait()
                except queue.Empty:
                    return
                with conn.transaction():
                    write_batch(conn, batch)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def copy_batch(conn: psycopg.Connection, batch: list[tuple[str, str, str]]) -> None:
    with conn.cursor().copy(f"COPY {PLAIN_TABLE} (id, res_type, content) FROM STDIN") as copy:
        for row in batch:
            copy.write_row(row)


def insert_batch(conn: psycopg.Connection, batch: list[tuple[str, str, str]]) -> None:
    values = ",".join(["(%s, %s, %s::jsonb)"] * len(batch))
    params = [v for row in batch for v in row]
    conn.execute(f"INSERT INTO {PLAIN_TABLE} (id, res_type, content) VALUES {values}", params)


def reset_plain_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {PLAIN_TABLE}")
        conn.execute(f"CREATE TABLE {PLAIN_TABLE} (id text PRIMARY KEY, res_type text NOT NULL, "
                     "content jsonb NOT NULL)")


def count_resources(url: str) -> int:
    """Resources stored, without the server's own record of the writes (a Provenance per transaction
    activity, the published AuditEvents: fhir_server/audit). What the after-commit consumers add
    (linked master Patients, RiskAssessments, escalation Flags) may still arrive during the run."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM resource WHERE res_type NOT IN ('Provenance', 'AuditEvent')"
                            ).fetchone()[0]  # type: ignore[index]


def peak_memory(args: argparse.Namespace, url: str) -> list[list[Any]]:
    """VmHWM of a fresh single worker before and after one ``--peak-bundle``-entry transaction."""
    bundle = next(transaction_bundles(args.peak_bundle, args.peak_bundle, seed=args.seed + 2))
    body = json.dumps(bundle, separators=(",", ":")).encode()
    warm = json.dumps(next(transaction_bundles(20, 20, seed=args.seed + 3))).encode()
    with harness.running_server(url, port=args.port, workers=1, log=args.log) as server:
        client = harness.Client(args.port)
        status, _ = client.call("POST", "/fhir", warm, MINIMAL)
        assert status == 200, status
        worker = server.worker_pids()[0]
        before = server.memory_kib()[worker]
        t0 = time.perf_counter()
        status, data = client.call("POST", "/fhir", body, MINIMAL)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"the {args.peak_bundle}-entry transaction failed: HTTP {status} {data[:600]!r}")
        after = server.memory_kib()[worker]
        client.close()
    mib = 1024.0
    return [
        [f"request body ({args.peak_bundle:,} entries)", f"{len(body) / mib / mib:.1f} MiB"],
        ["worker VmHWM after warm-up", f"{before['VmHWM'] / mib:.0f} MiB"],
        ["worker VmHWM after the Bundle", f"{after['VmHWM'] / mib:.0f} MiB"],
        ["peak growth during the Bundle", f"{(after['VmHWM'] - before['VmHWM']) / mib:.0f} MiB"],
        ["worker VmRSS after the Bundle", f"{after['VmRSS'] / mib:.0f} MiB"],
        ["time for the Bundle", f"{elapsed:.2f} s ({args.peak_bundle / elapsed:,.0f} resources/s, 1 worker)"],
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {harness.machine_summary()}")
    print(f"generating {args.total:,} resources in Bundles of {args.bundle_size:,} (seed {args.seed})", flush=True)
    bundles = list(transaction_bundles(args.total, args.bundle_size, seed=args.seed))
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in bundles]
    mib = sum(map(len, bodies)) / 1024 / 1024
    warmups = [json.dumps(b).encode() for b in transaction_bundles(50 * args.workers * 2, 50, seed=args.seed + 1)]

    url = harness.create_database(args.pg_url, args.db)
    how = harness.migrate(url)
    print(f"database {args.db} created, schema by {how}", flush=True)
    try:
        with harness.running_server(url, port=args.port, workers=args.workers, log=args.log) as server:
            print(f"server: {' '.join(server.command)}", flush=True)
            post_bundles(args.port, warmups, args.clients)  # import paths, pools and model caches warm
            before = count_resources(url)
            elapsed, per_bundle = post_bundles(args.port, bodies, args.clients)
            stored = count_resources(url) - before
        if stored < args.total:  # more is the server's own: linked masters, risk assessments, Flags
            raise RuntimeError(f"{stored} resources stored, {args.total} sent")
        server_rate = args.total / elapsed
        lat = harness.latency_summary(per_bundle)
        print(f"server: {args.total:,} resources in {elapsed:.1f} s", flush=True)

        batches = plain_rows(bundles)
        reset_plain_table(url)
        copy_s = run_parallel(url, batches, args.clients, copy_batch)
        reset_plain_table(url)
        insert_s = run_parallel(url, batches, args.clients, insert_batch)
        copy_rate, insert_rate = args.total / copy_s, args.total / insert_s

        rows = [
            ["server: transaction Bundles over HTTP", f"{elapsed:.1f}", server_rate, "1.0x", "-"],
            ["baseline: COPY into (id, type, jsonb)", f"{copy_s:.1f}", copy_rate, harness.ratio(copy_rate, server_rate),
             "-"],
            ["baseline: multi-row INSERT", f"{insert_s:.1f}", insert_rate, harness.ratio(insert_rate, server_rate),
             "-"],
        ]
        rows[0][4] = "met" if server_rate >= 3000 else "MISSED"
        harness.print_table(
            f"Ingest: {args.total:,} resources ({mib:.0f} MiB JSON), Bundles of {args.bundle_size:,}, "
            f"{args.workers} workers, {args.clients} clients",
            ["what", "seconds", "resources/s", "baseline / server", "target >= 3,000/s"], rows)
        harness.print_table("Per-Bundle latency (server)", ["p50 ms", "p95 ms", "p99 ms", "mean ms"],
                            [[lat["p50"], lat["p95"], lat["p99"], lat["mean"]]])

        if args.peak_bundle:
            harness.print_table(f"Peak memory of one {args.peak_bundle:,}-entry transaction (fresh 1-worker server)",
                                ["what", "value"], peak_memory(args, url))
    finally:
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
