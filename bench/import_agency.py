"""Multi-agency import throughput per format, against a raw-PostgreSQL baseline measured in the same run.

What is measured (all in one fresh database, created here and dropped unless ``--keep``):

1. **Data**: ``fhir-server synth --families N --seed S`` (the synthetic multi-agency dataset), written
   to ``--data-dir`` or reused from there with ``--reuse-data`` (when its manifest has the same
   families and seed). Generating it is not timed.
2. **Server**: every manifest entry imported in-process through the real path: ``build_services``
   (``FHIR_AUTH_ENABLED=0``; ``FHIR_BROKER_URL`` on Redis db 15 so after-commit work is queued, not
   run alongside — that db is flushed before and after), then the mapping and the load of
   ``mappings.operation.import_files`` with a system ``RequestContext``, timed separately: mapping
   (``mapper(fmt)(sources)``) and loading (``loader.import_file``: one transaction per file). File
   bytes are read before the clock starts. Figures per format and overall: records/s and resources/s
   (resources = the mapped resources of the file; the agency Organization and one Provenance per
   file are written too but not counted).
3. **Baseline**: the same resources' JSON (the mapped resources, serialised before the clock
   starts) written by ``COPY … FROM STDIN`` into a plain ``(id, type, jsonb)`` table, one
   transaction per file, so the ratio server / baseline is printed.
4. **Re-import** (``--reimport``): every file imported a second time, timed the same way. Nothing
   changes (no new version, and no new Provenance: the file has one): the cost of the matches,
   merges, validation and comparisons alone.
5. **Extrapolation** to 100,000 children (the issue's target: a full multi-agency load in under
   15 minutes), linear in resources: resources per child of this dataset × 100,000 at the overall
   resources/s measured here. It is an extrapolation, not a measurement.

Run ``python -m bench.import_agency --quick`` (1,000 families) or ``python -m bench.import_agency``
(10,000 families, about 20,000 children); ``--families 51300`` is about 100,000 children (the real
load, measured rather than extrapolated: about 1.2 million resources).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness

PLAIN_TABLE = "bench_plain_resource"
TARGET_CHILDREN = 100_000
TARGET_SECONDS = 15 * 60


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 families instead of 10,000")
    p.add_argument("--families", type=int, default=None, help="families to generate (default 10,000; quick 1,000)")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the dataset is written (default /tmp/bench_import_agency/families_N_seed_S)")
    p.add_argument("--reuse-data", action="store_true",
                   help="reuse the dataset in --data-dir when its manifest has the same families and seed")
    p.add_argument("--lenient", action="store_true", help="import in lenient mode (default: strict, as the CLI)")
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL, help="PostgreSQL server (trust auth)")
    p.add_argument("--db", default="bench_fhir_import_agency", help="database to create (dropped first if present)")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/15",
                   help="FHIR_BROKER_URL: after-commit work is queued here (flushed before and after)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--formats", default="",
                   help="comma-separated formats to import (default: all; e.g. to profile one with py-spy)")
    p.add_argument("--reimport", action="store_true",
                   help="then import every file again and time that too (nothing changes: the idempotent path)")
    args = p.parse_args(argv)
    if args.families is None:
        args.families = 1_000 if args.quick else 10_000
    if args.data_dir is None:
        args.data_dir = Path(f"/tmp/bench_import_agency/families_{args.families}_seed_{args.seed}")
    return args


# -- the dataset ----------------------------------------------------------------------------------


def dataset(args: argparse.Namespace) -> dict[str, Any]:
    """The manifest of the dataset in ``--data-dir``, generated unless reusable."""
    manifest_path = args.data_dir / "manifest.json"
    if args.reuse_data and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("families") == args.families and manifest.get("seed") == args.seed:
            print(f"reusing the dataset in {args.data_dir}", flush=True)
            return manifest
        print(f"{args.data_dir} holds another dataset; regenerating", flush=True)
    from synthetic.config import SynthConfig
    from synthetic.generator import generate

    print(f"generating {args.families:,} families (seed {args.seed}) into {args.data_dir}", flush=True)
    t0 = time.perf_counter()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    generate(SynthConfig(families=args.families, seed=args.seed), args.data_dir, progress=False, overwrite=True)
    print(f"generated in {time.perf_counter() - t0:.1f} s", flush=True)
    return json.loads(manifest_path.read_text(encoding="utf-8"))


def children_of(args: argparse.Namespace) -> int:
    summary = args.data_dir / "ground_truth" / "summary.json"
    return int(json.loads(summary.read_text(encoding="utf-8"))["children"])


# -- Redis (the broker's queue) ---------------------------------------------------------------------


def flush_broker(url: str) -> None:
    """FLUSHDB on the broker's Redis database (redis-py if installed, redis-cli otherwise)."""
    try:
        import redis  # type: ignore[import-not-found]

        redis.Redis.from_url(url).flushdb()
        return
    except ImportError:
        pass
    subprocess.run(["redis-cli", "-u", url, "FLUSHDB"], check=True, stdout=subprocess.DEVNULL)


# -- the server path --------------------------------------------------------------------------------


def build(args: argparse.Namespace, url: str) -> Any:
    os.environ.update({"FHIR_DATABASE_URL": url, "FHIR_AUTH_ENABLED": "0", "FHIR_BROKER_URL": args.broker_url})
    os.environ.setdefault("FHIR_BASE_URL", "http://127.0.0.1:8080/fhir")
    from fhir_server import build_services
    from fhir_server.collector import freeze_startup
    from fhir_server.config import Settings

    services = build_services(Settings.from_env())
    freeze_startup()  # as ``fhir-server import`` does (mappings/cli.py)
    return services


def import_all(args: argparse.Namespace, services: Any, manifest: dict[str, Any]
               ) -> tuple[dict[str, dict[str, float]], list[list[tuple[str, str, str]]]]:
    """Map and load every manifest entry; per-format totals and the baseline rows (one batch per file)."""
    from fhir_server.fhir import jsonio
    from fhir_server.repository.context import RequestContext
    from mappings.core import SourceFile
    from mappings.formats import mapper
    from mappings.loader import import_file, usable_upserts

    ctx = RequestContext.system(services.settings.base_url, client_id="bench-import-agency")
    per_format: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    batches: list[list[tuple[str, str, str]]] = []
    wanted = {f for f in args.formats.split(",") if f}
    entries = [e for e in manifest.get("files", []) if not wanted or e["format"] in wanted]
    for index, entry in enumerate(entries, 1):
        fmt = entry["format"]
        names = entry.get("paths") or [entry["path"]]
        files = [(Path(n).name, (args.data_dir / n).read_bytes()) for n in names]
        # as mappings.operation.import_files, with the two steps timed apart
        t0 = time.perf_counter()
        sources = [SourceFile(name, content) for name, content in files]
        agency, result = mapper(fmt)(sources)
        t1 = time.perf_counter()
        rows = [(u.full_url.rsplit(":", 1)[-1], u.resource_type,
                 jsonio.dumps({**u.resource, "id": u.full_url.rsplit(":", 1)[-1]}))
                for u in usable_upserts(result, lenient=args.lenient)]
        if agency is None:
            raise RuntimeError(f"{fmt} {names}: no agency ({[i.to_issue() for i in result.issues][:3]})")
        t2 = time.perf_counter()
        combined = SourceFile(", ".join(s.name for s in sources), b"".join(s.content for s in sources))
        summary = import_file(services.router, ctx, result, agency, combined, fmt, lenient=args.lenient)
        t3 = time.perf_counter()
        if not summary.written:
            issues = "; ".join(str(i.diagnostics) for i in summary.issues[:5])
            raise RuntimeError(f"{fmt} {', '.join(names)} was not loaded: {issues}")
        batches.append(rows)
        f = per_format[fmt]
        f["files"] += 1
        f["records"] += summary.records
        f["resources"] += summary.resources
        f["created"] += summary.created
        f["updated"] += summary.updated
        f["unchanged"] += summary.unchanged
        f["bytes"] += sum(len(c) for _, c in files)
        f["map_s"] += t1 - t0
        f["load_s"] += t3 - t2
        print(f"[{index}/{len(entries)}] {fmt}: {summary.records:,} records, {summary.resources:,} resources "
              f"({summary.created:,} created, {summary.updated:,} updated) map {t1 - t0:.1f} s, "
              f"load {t3 - t2:.1f} s", file=sys.stderr, flush=True)
    return per_format, batches


# -- the baseline -------------------------------------------------------------------------------------


def baseline_copy(url: str, batches: list[list[tuple[str, str, str]]]) -> float:
    """COPY every batch in its own transaction into a fresh plain table; elapsed seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {PLAIN_TABLE}")
        conn.execute(f"CREATE TABLE {PLAIN_TABLE} (id text PRIMARY KEY, res_type text NOT NULL, "
                     "content jsonb NOT NULL)")
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        for batch in batches:
            with conn.transaction():
                with conn.cursor().copy(f"COPY {PLAIN_TABLE} (id, res_type, content) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
        return time.perf_counter() - t0


def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds (user + system) so far of every other PostgreSQL backend on the bench database,
    by pid, from /proc (PostgreSQL runs on this machine): with this process's own CPU time, the
    import's cost whatever else the machine is running."""
    out: dict[int, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid()")]
    for pid in pids:
        out[pid] = proc_cpu(pid)
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process of this machine so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_cpu() -> dict[int, float]:
    """CPU seconds so far of the import's validation processes (mappings/prevalidate.py), by pid."""
    from mappings import prevalidate

    pool = prevalidate._pool
    return {pid: proc_cpu(pid) for pid in (getattr(pool, "_processes", None) or {})} if pool else {}


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {harness.machine_summary()}")
    manifest = dataset(args)
    children = children_of(args)
    url = harness.create_database(args.pg_url, args.db)
    how = harness.migrate(url)
    print(f"database {args.db} created, schema by {how}", flush=True)
    flush_broker(args.broker_url)
    try:
        services = build(args, url)
        pg_cpu0, pool_cpu0, cpu0 = backend_cpu(url), pool_cpu(), time.process_time()
        start = time.perf_counter()
        per_format, batches = import_all(args, services, manifest)
        wall = time.perf_counter() - start
        py_cpu = time.process_time() - cpu0
        pg_cpu = sum(t - pg_cpu0.get(pid, 0.0) for pid, t in backend_cpu(url).items())
        val_cpu = sum(t - pool_cpu0.get(pid, 0.0) for pid, t in pool_cpu().items())
        services.engine.dispose()
        copy_s = baseline_copy(url, batches)

        rows = []
        total: dict[str, float] = defaultdict(float)
        for fmt in sorted(per_format):
            f = per_format[fmt]
            both = f["map_s"] + f["load_s"]
            rows.append([fmt, int(f["files"]), int(f["records"]), int(f["resources"]), f["map_s"], f["load_s"],
                         rate(f["records"], both), rate(f["resources"], both), rate(f["resources"], f["load_s"])])
            for k, v in f.items():
                total[k] += v
        both = total["map_s"] + total["load_s"]
        rows.append(["**all formats**", int(total["files"]), int(total["records"]), int(total["resources"]),
                     total["map_s"], total["load_s"], rate(total["records"], both), rate(total["resources"], both),
                     rate(total["resources"], total["load_s"])])
        harness.print_table(
            f"Import: {args.families:,} families ({children:,} children), {int(total['files'])} sources, "
            f"{total['bytes'] / 1024 / 1024:.0f} MiB of agency files, in-process, one transaction per file",
            ["format", "files", "records", "resources", "map s", "load s", "records/s", "resources/s",
             "resources/s (load only)"], rows)

        resources = total["resources"]
        server_rate, copy_rate = rate(resources, both), rate(resources, copy_s)
        harness.print_table(
            f"Server against raw PostgreSQL: the same {int(resources):,} resources' JSON",
            ["what", "seconds", "resources/s", "baseline / server"],
            [["server: map + load (import_files path)", f"{both:.1f}", server_rate, "1.0x"],
             ["server: load only", f"{total['load_s']:.1f}", rate(resources, total["load_s"]),
              harness.ratio(copy_rate, rate(resources, total["load_s"]))],
             ["baseline: COPY into (id, type, jsonb), a transaction per file", f"{copy_s:.1f}", copy_rate,
              harness.ratio(copy_rate, server_rate)]])

        per_child = resources / children
        projected = per_child * TARGET_CHILDREN
        projected_s = projected / server_rate
        records_projected = total["records"] / children * TARGET_CHILDREN
        harness.print_table(
            f"Extrapolation (NOT measured; linear in resources) to {TARGET_CHILDREN:,} children, target < 15 min",
            ["what", "value"],
            [["resources per child in this dataset", f"{per_child:.1f}"],
             ["records / resources for 100,000 children", f"{records_projected:,.0f} / {projected:,.0f}"],
             ["at the overall rate measured here", f"{server_rate:,.0f} resources/s"],
             ["projected time", f"{projected_s:,.0f} s ({projected_s / 60:.1f} min)"],
             ["baseline COPY projected", f"{projected / copy_rate:,.0f} s"],
             ["target 15 min (900 s)", "met" if projected_s < TARGET_SECONDS else "MISSED"]])
        print(f"\nwall clock of the import loop (including serialising the baseline rows): {wall:.1f} s")
        print(f"resources created / updated / unchanged: {int(total['created']):,} / {int(total['updated']):,} / "
              f"{int(total['unchanged']):,}")
        # CPU time does not grow when other programs share the machine, wall time does: it tells what
        # this import costs, and (2 cores) what it would reach alone — between one core doing all of
        # it in turn and two cores kept busy (no part can go faster than its own CPU time).
        parts = [py_cpu, val_cpu, pg_cpu]
        harness.print_table(
            "CPU time of the import loop (map + load, plus serialising the baseline rows)",
            ["what", "CPU s", "µs per resource", "resources/s if CPU-bound"],
            [["this process (mapping, merging, indexing, JSON, writing)", f"{py_cpu:.1f}",
              1e6 * py_cpu / resources, rate(resources, py_cpu)],
             ["its validation process (mappings/prevalidate.py)", f"{val_cpu:.1f}", 1e6 * val_cpu / resources,
              rate(resources, val_cpu)],
             ["its PostgreSQL backends", f"{pg_cpu:.1f}", 1e6 * pg_cpu / resources, rate(resources, pg_cpu)],
             ["all of it, one after the other (one core)", f"{sum(parts):.1f}", 1e6 * sum(parts) / resources,
              rate(resources, sum(parts))]])
        best = max(max(parts), sum(parts) / 2)
        print(f"projected for {TARGET_CHILDREN:,} children on an otherwise idle 2-core machine, from CPU time "
              f"(NOT measured): {projected * best / resources / 60:.1f} min with both cores busy, "
              f"{projected * sum(parts) / resources / 60:.1f} min on one")
        if args.reimport:
            services = build(args, url)
            again, _batches = import_all(args, services, manifest)
            services.engine.dispose()
            re_rows = []
            for fmt in sorted(again):
                f = again[fmt]
                re_rows.append([fmt, int(f["resources"]), int(f["unchanged"]), int(f["created"] + f["updated"]),
                                f["load_s"], rate(f["resources"], f["map_s"] + f["load_s"])])
            t = {k: sum(f[k] for f in again.values()) for k in ("resources", "unchanged", "created", "updated",
                                                                 "map_s", "load_s")}
            re_rows.append(["**all formats**", int(t["resources"]), int(t["unchanged"]),
                            int(t["created"] + t["updated"]), t["load_s"],
                            rate(t["resources"], t["map_s"] + t["load_s"])])
            harness.print_table("Re-import of every file (idempotent: nothing may change)",
                                ["format", "resources", "unchanged", "created or updated", "load s",
                                 "resources/s (map + load)"], re_rows)
    finally:
        flush_broker(args.broker_url)
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
