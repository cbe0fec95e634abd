"""The read of a full return's retirement (mappings/snapshot.py), the former way against the current one,
back to back on the same loaded database.

A full return (``cin-census-xml``, ``ssda903-csv``) retires the stored records it no longer lists, so
its import reads, inside its transaction, what this agency has stored of each kind it accounts for:

* **former** (until 2026-11-25): per kind (six for the CIN census, three for SSDA903), every current
  record of the agency with an identifier in that kind's system, with its content, locked
  (``bulk.find_token_system``) — a cost that grows with everything the agency has stored, per file;
* **current**: one narrow query per file (``bulk.find_token_keys``: ids and keys only, from the
  reference index of the children the file names, the agency's tag), then the content, locked,
  of only the records whose key the file no longer has (``bulk.current_rows``).

Both are timed inside a write unit of work that is rolled back, for every full-return file of the
dataset, after its own import (so the database holds what a re-import would meet). Needs a database
loaded by ``python -m bench.import_agency --keep`` from the same ``--data-dir``.

    .venv/bin/python -m bench.import_agency --quick --reuse-data --data-dir D --db s4map_bench_after --keep
    .venv/bin/python -m bench.retirement_read --data-dir D --db s4map_bench_after
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness

FULL_RETURNS = ("cin-census-xml", "ssda903-csv")


class _Rollback(Exception):
    pass


def former_read(uow: Any, retirement: Any, local: dict[str, str]) -> tuple[int, int]:
    """The read as it was: rows read, and how many the rule found stale."""
    from fhir_server.repository.bulk import find_token_system
    from mappings import systems
    from mappings.snapshot import stale

    read = found = 0
    only_this_agency = (("_tag", systems.AGENCY_TAG_SYSTEM, retirement.agency_tag["code"]),)
    for snap in retirement.snapshots:
        if not any(url in local for url in snap.spans):
            continue
        rows = find_token_system(uow, snap.resource_type, "identifier", snap.system, only_this_agency, lock=True)
        read += len(rows)
        found += len(stale(snap, rows, retirement.kept.get(snap.system, set()), local))
    return read, found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--db", required=True, help="a database loaded from --data-dir by bench.import_agency --keep")
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--rounds", type=int, default=3, help="times each read is run (the best is kept)")
    args = p.parse_args(argv)
    os.environ.update({"FHIR_DATABASE_URL": harness.db_url(args.pg_url, args.db), "FHIR_AUTH_ENABLED": "0"})
    os.environ.setdefault("FHIR_BASE_URL", "http://127.0.0.1:8080/fhir")
    from urllib.parse import parse_qsl

    from fhir_server import build_services
    from fhir_server.config import Settings
    from fhir_server.repository.bulk import find_token_keys
    from mappings.core import SourceFile
    from mappings.formats import mapper
    from mappings.loader import _retirement, criteria, usable_upserts

    print(f"machine: {harness.machine_summary()}")
    services = build_services(Settings.from_env())
    repo = services.router.repo
    manifest = json.loads((args.data_dir / "manifest.json").read_text(encoding="utf-8"))
    rows_out = []
    totals = [0, 0.0, 0, 0.0]
    for entry in manifest["files"]:
        if entry["format"] not in FULL_RETURNS:
            continue
        names = entry.get("paths") or [entry["path"]]
        sources = [SourceFile(Path(n).name, (args.data_dir / n).read_bytes()) for n in names]
        agency, result = mapper(entry["format"])(sources)
        assert agency is not None
        upserts = usable_upserts(result, lenient=False)
        retirement = _retirement(result, upserts, agency, SourceFile("x", b""), None)
        if retirement is None:
            continue
        children = {url for snap in retirement.snapshots for url in snap.spans}
        best: dict[str, tuple[float, int, int]] = {}
        for _ in range(args.rounds):
            try:
                with repo.unit_of_work() as uow:
                    local = {}
                    for u in upserts:
                        if u.full_url in children:
                            ids = uow.find(u.resource_type, parse_qsl(criteria(u, agency)))
                            if len(ids) == 1:
                                local[u.full_url] = f"{u.resource_type}/{ids[0]}"
                    t0 = time.perf_counter()
                    read, found = former_read(uow, retirement, local)
                    t1 = time.perf_counter()
                    now = retirement.find(uow, local)
                    t2 = time.perf_counter()
                    snaps = [s for s in retirement.snapshots if any(url in local for url in s.spans)]
                    ids = sorted({local[url].split("/", 1)[1] for s in snaps for url in s.spans if url in local})
                    keys = len(find_token_keys(uow, "identifier",
                                               [(s.resource_type, s.system, s.reference) for s in snaps],
                                               "Patient", ids, (("_tag", retirement.agency_tag["system"],
                                                                 retirement.agency_tag["code"]),)))
                    assert len(now) == found, (len(now), found)
                    for name, seconds, count in (("former", t1 - t0, read), ("current", t2 - t1, keys)):
                        if name not in best or seconds < best[name][0]:
                            best[name] = (seconds, count, len(now))
                    raise _Rollback
            except _Rollback:
                pass
        fs, fr, _ = best["former"]
        cs, ck, stale_n = best["current"]
        rows_out.append([f"{entry['format']} {names[0]}", len(children), fr, f"{fs * 1000:.1f}", ck, stale_n,
                         f"{cs * 1000:.1f}"])
        totals[0] += fr
        totals[1] += fs
        totals[2] += ck
        totals[3] += cs
    rows_out.append(["**all**", "", totals[0], f"{totals[1] * 1000:.1f}", totals[2], "", f"{totals[3] * 1000:.1f}"])
    harness.print_table("Retirement read per full-return file (best of rounds; rolled back)",
                        ["file", "children", "former: rows read (content, locked)", "former ms",
                         "current: keys read (no content)", "stale (read with content)", "current ms"], rows_out)
    print(f"after: {harness.load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
