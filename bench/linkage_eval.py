"""Record linkage: quality against the synthetic ground truth, and ``Patient/$match`` latency.

``quality`` generates ``--families`` families with the synthetic generator (or reads ``--data``),
maps the agency files without a server, links the agency Patients in load order exactly as linking
on write does (linkage.linker over an in-memory store) and prints pairwise precision, recall, F1,
the false-merge rate for children, what review Tasks would add, the true pairs no rule could link
(:func:`linkage.evaluate.unlinkable_pairs`, counted apart, never dropped), the *ceiling* beside F1 (the
best F1 any linker can reach on the evidence the records carry) and every missed pair by cause, agency
pair and the evidence each side carries (:func:`linkage.evaluate.missed_breakdown`). ``--model em``
(default) estimates m/u by EM on the evaluated records themselves (unlabelled); ``--model shipped``
uses linkage/default_model.json (EM on another seed).

``latency`` loads the agency Patients of enough families for ``--children`` children into a fresh
PostgreSQL database (the server's own schema and index rows, written with the bulk writer), starts
the real server and times ``--queries`` sequential ``POST /fhir/Patient/$match`` calls over HTTP,
each with an agency record of the dataset as the query (p50/p95/p99). The raw-SQL baseline is the
blocking query alone (what a match cannot do without), run directly with psycopg. It also prints the
load average and, per ``$match``, the CPU time of the server's processes and of its PostgreSQL
backends and the time they waited for a CPU (the kernel's schedstat): on a shared machine that tells
slow code from a starved machine. ``--reuse`` keeps a loaded database for the next run.

    python bench/linkage_eval.py quality --families 5000 --seed 11
    python bench/linkage_eval.py latency --children 100000 --queries 500 [--data DIR --reuse]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from linkage import evaluate  # noqa: E402
from linkage.linker import Matcher  # noqa: E402
from linkage.model import Model, train  # noqa: E402

CHILDREN_PER_FAMILY = 1.87  # the generator's mean (1,870 children in 1,000 families, seed 7)


def quality(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="linkage-quality-"))
    started = time.perf_counter()
    if not (directory / "manifest.json").exists():
        evaluate.generate(args.families, args.seed, directory)
    data = evaluate.load_dataset(directory)
    prepared = time.perf_counter() - started
    started = time.perf_counter()
    model = train(data.records) if args.model == "em" else Model.load()
    trained = time.perf_counter() - started
    report = evaluate.evaluate(data, model)
    print(f"dataset: {directory} ({args.families:,} families, seed {args.seed}); generated and mapped in "
          f"{prepared:.1f} s; model: {args.model} ({trained:.1f} s)")
    print("\n".join(report.lines()))
    store, _ = evaluate.link_all(data, model)
    truth = evaluate.true_pairs(data)
    predicted = evaluate.cluster_pairs(store.clusters.values())
    by_id = {r.id: r for r in data.records}
    rows = evaluate.missed_breakdown(data, truth, predicted, Matcher(model, store))
    by_cause: Counter[str] = Counter()
    for row in rows:
        by_cause[row[0]] += row[-1]
    harness.print_table("Missed true pairs by cause", ("cause", "pairs", "share of true pairs"),
                        [(c, n, f"{n / len(truth):.5f}") for c, n in sorted(by_cause.items())])
    harness.print_table("Missed true pairs by cause, agencies and the evidence each side carries",
                        ("cause", "agencies", "evidence (first)", "evidence (second)", "grade given", "pairs"), rows)
    named_truth = {p for p in truth if all(by_id[i].family for i in p)}
    named_tp = len(named_truth & predicted)
    named_pred = {p for p in predicted if all(by_id[i].family for i in p)}
    named_recall = named_tp / len(named_truth) if named_truth else 1.0
    named_precision = named_tp / len(named_pred) if named_pred else 1.0
    print(f"pairs where both records carry a name: precision {named_precision:.5f} recall {named_recall:.5f} "
          f"F1 {2 * named_precision * named_recall / (named_precision + named_recall):.5f}")
    result = {"precision": report.precision, "recall": report.recall, "f1": report.f1,
              "unlinkable_pairs": report.unlinkable, "recall_linkable": report.recall_linkable,
              "f1_linkable": report.f1_linkable, "recall_ceiling": report.recall_ceiling,
              "f1_ceiling": report.f1_ceiling, "missed_by_cause": dict(by_cause),
              "children_false_merged": report.children_false_merged,
              "false_merge_rate": report.false_merge_rate, "reviews": report.reviews,
              "named_recall": named_recall, "named_precision": named_precision}
    if args.save_model:
        model.save(args.save_model)
        print(f"model saved to {args.save_model}")
    return result


# -- latency ------------------------------------------------------------------------------------------------

def load_patients(url: str, records: list[dict[str, Any]]) -> float:
    """Write the Patients with the server's own bulk writer (resource, history, index and outbox rows)."""
    from fhir_server.config import Settings
    from fhir_server.repository.bulk import DeferredCreates
    from fhir_server.repository.context import RequestContext
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine

    settings = Settings.from_env()
    engine = make_engine(url)
    repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
    ctx = RequestContext.system(settings.base_url)
    started = time.perf_counter()
    for start in range(0, len(records), 20_000):
        with repo.unit_of_work() as uow, DeferredCreates(uow, batch_size=2000) as bulk:
            for patient in records[start:start + 20_000]:
                bulk.create(ctx, patient)
        print(f"  loaded {min(start + 20_000, len(records)):,} Patients", file=sys.stderr)
    with engine.begin() as conn:  # nothing to link on write here: the figure is $match alone
        from sqlalchemy import text
        conn.execute(text("UPDATE outbox SET processed_at = CURRENT_TIMESTAMP WHERE processed_at IS NULL"))
    engine.dispose()
    return time.perf_counter() - started


def agency_patients(directory: Path) -> list[dict[str, Any]]:
    from mappings.core import SourceFile
    from mappings.formats import mapper
    from mappings.loader import criteria

    from linkage.record import AGENCY_TAG_SYSTEM

    cached = directory / "linkage_patients.json"  # mapping 50,000 families takes minutes: once is enough
    if cached.exists():
        return list(json.loads(cached.read_text(encoding="utf-8")))
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    patients: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        agency, result = mapper(entry["format"])([SourceFile(p, (directory / p).read_bytes()) for p in entry["paths"]])
        if agency is None:
            continue
        for upsert in result.upserts:
            if upsert.resource_type == "Patient":
                resource = {k: v for k, v in upsert.resource.items() if k not in ("managingOrganization",
                                                                                 "generalPractitioner")}
                resource["meta"] = {"tag": [{"system": AGENCY_TAG_SYSTEM, "code": f"{agency.kind}/{agency.code}"}]}
                key = criteria(upsert, agency)
                patients[key] = evaluate.combine(patients.get(key), resource, merge=getattr(upsert, "merge", False))
    cached.write_text(json.dumps(list(patients.values())), encoding="utf-8")
    return list(patients.values())


def latency(args: argparse.Namespace) -> dict[str, Any]:
    families = int(args.children / CHILDREN_PER_FAMILY) + 1
    directory = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="linkage-latency-"))
    if not (directory / "manifest.json").exists():
        print(f"generating {families:,} families …", file=sys.stderr)
        evaluate.generate(families, args.seed, directory)
    patients = agency_patients(directory)
    children = sum(1 for line in (directory / "ground_truth" / "persons.csv").open() if ",child," in line)
    url = harness.db_url(args.pg_url, args.database)
    try:
        if args.reuse and _patients_stored(url) == len(patients):
            harness.migrate(url)
            load_seconds = 0.0
            print(f"reusing {args.database}: {len(patients):,} agency Patients ({children:,} children)", file=sys.stderr)
        else:
            url = harness.create_database(args.pg_url, args.database)
            harness.migrate(url)
            print(f"loading {len(patients):,} agency Patients ({children:,} children) …", file=sys.stderr)
            load_seconds = load_patients(url, patients)
        harness.analyze(url)
        rng = random.Random(args.seed)
        queries = [json.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": {k: v for k, v in p.items() if k != "meta"}}]}).encode()
            for p in rng.sample(patients, args.queries)]
        timings: list[float] = []
        found: list[int] = []
        os.environ.setdefault("FHIR_AUTH_ENABLED", "0")  # token checks are measured by their own benchmark
        with harness.running_server(url, port=args.port, workers=1) as server:
            client = harness.Client(server.port)
            for body in queries[:20]:  # warm-up: imports, caches, connection pool
                client.call("POST", "/fhir/Patient/$match", body)
            # Where the time goes: CPU time of the server's processes and of its PostgreSQL backends, and
            # the time they were runnable but waited for a CPU (/proc/<pid>/task/*/schedstat), over the run.
            server_pids = _process_tree(server.proc.pid)
            backend_pids = _backends(url)
            load_before = os.getloadavg()
            sched_before = _schedstat(server_pids), _schedstat(backend_pids)
            for body in queries:
                started = time.perf_counter()
                status, answer = client.call("POST", "/fhir/Patient/$match", body)
                timings.append(time.perf_counter() - started)
                assert status == 200, answer[:300]
                found.append(len(json.loads(answer).get("entry", [])))
            sched_after = _schedstat(server_pids), _schedstat(backend_pids)
            load_after = os.getloadavg()
            client.close()
        summary = harness.latency_summary(timings)
        print(f"$match over HTTP: {summary}", file=sys.stderr)
        n = len(queries)
        where = {name: {"cpu_ms": 1000 * (after[0] - before[0]) / n, "wait_ms": 1000 * (after[1] - before[1]) / n}
                 for name, before, after in (("server", sched_before[0], sched_after[0]),
                                             ("postgres", sched_before[1], sched_after[1]))}
        print(f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after; per $match: "
              f"server CPU {where['server']['cpu_ms']:.1f} ms + waiting for a CPU {where['server']['wait_ms']:.1f} ms; "
              f"PostgreSQL backends CPU {where['postgres']['cpu_ms']:.1f} ms + waiting "
              f"{where['postgres']['wait_ms']:.1f} ms")
        baseline = blocking_baseline(url, patients, rng, args.queries)
        base = harness.latency_summary(baseline)
        harness.print_table(
            f"POST Patient/$match, {len(patients):,} agency Patients ({children:,} children), "
            f"{args.queries} sequential queries, 1 worker",
            ("", "p50 ms", "p95 ms", "p99 ms", "mean ms"),
            [("$match over HTTP", summary["p50"], summary["p95"], summary["p99"], summary["mean"]),
             ("raw SQL: blocking query only", base["p50"], base["p95"], base["p99"], base["mean"])])
        print(f"load: {load_seconds:.0f} s; candidates returned per query: mean {sum(found) / len(found):.1f}")
        return {"patients": len(patients), "children": children, **summary, "per_match": where,
                "load": [load_before[0], load_after[0]]}
    finally:
        if not (args.keep or args.reuse):
            harness.drop_database(args.pg_url, args.database)


def _patients_stored(url: str) -> int | None:
    """How many Patients database ``url`` holds, or None when it does not exist or has no schema."""
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT count(*) FROM resource WHERE res_type = 'Patient'").fetchone()[0]
    except psycopg.Error:
        return None


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants (the server's master and workers)."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parent.items() if ppid in frontier]
        tree += frontier
    return tree


def _backends(url: str) -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database (the server's pool), but ours."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchall()
    return [r[0] for r in rows]


def _schedstat(pids: list[int]) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable but waiting for one, summed over the threads of ``pids``
    (the kernel's /proc/<pid>/task/<tid>/schedstat)."""
    on_cpu = waiting = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                run, wait, _ = stat.read_text().split()
            except (OSError, ValueError):
                continue
            on_cpu, waiting = on_cpu + int(run), waiting + int(wait)
    return on_cpu / 1e9, waiting / 1e9


def blocking_baseline(url: str, patients: list[dict[str, Any]], rng: random.Random, n: int) -> list[float]:
    """The blocking query of linkage.store, run directly (no HTTP, no scoring, no FHIR JSON)."""
    from sqlalchemy.dialects import postgresql

    import psycopg

    from fhir_server.config import Settings
    from fhir_server.repository.context import RequestContext
    from fhir_server.repository.sql import SqlRepository, UnitOfWork
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.storage.db import make_engine
    from linkage.blocking import query_for
    from linkage.record import from_patient
    from linkage.store import SqlLinkStore

    settings = Settings.from_env()
    engine = make_engine(url)
    repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
    timings = []
    statements = []
    with engine.connect() as conn:
        store = SqlLinkStore(UnitOfWork(conn, repo), RequestContext.system(settings.base_url))
        captured: list[Any] = []
        class Capture:  # records the statement instead of running it
            def execute(self, stmt: Any, *_: Any) -> Any:
                captured.append(stmt)
                return type("NoRows", (), {"all": lambda _self: []})()

        store.conn = Capture()  # type: ignore[assignment]
        for patient in rng.sample(patients, n):
            captured.clear()
            store.candidates(query_for(from_patient(patient, "")))
            if captured:
                statements.append(str(captured[0].compile(dialect=postgresql.dialect(),
                                                          compile_kwargs={"literal_binds": True})))
    engine.dispose()
    with psycopg.connect(url) as raw:
        for sql in statements:
            started = time.perf_counter()
            raw.execute(sql).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality", help="precision/recall/F1 against the generator's ground truth")
    q.add_argument("--families", type=int, default=2000)
    q.add_argument("--seed", type=int, default=11)
    q.add_argument("--data", help="an existing generated dataset (directory with manifest.json)")
    q.add_argument("--model", choices=("em", "shipped"), default="em")
    q.add_argument("--save-model", help="write the model used to this JSON file")
    lat = sub.add_parser("latency", help="$match p50/p95/p99 over HTTP on PostgreSQL")
    lat.add_argument("--children", type=int, default=100_000)
    lat.add_argument("--queries", type=int, default=500)
    lat.add_argument("--seed", type=int, default=5)
    lat.add_argument("--data", help="an existing generated dataset")
    lat.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    lat.add_argument("--database", default="bench_linkage")
    lat.add_argument("--port", type=int, default=8093)
    lat.add_argument("--keep", action="store_true", help="keep the database afterwards")
    lat.add_argument("--reuse", action="store_true",
                     help="reuse --database when it holds the dataset's Patients (implies --keep)")
    args = p.parse_args(argv)
    result = quality(args) if args.command == "quality" else latency(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
