"""``fhir-server import``: agency files into the server's database, through the same mapping and
transaction path as ``$import-agency-data``, with progress on stderr and a summary per file.

    fhir-server import --format cin-census-xml 201_cin.xml
    fhir-server import --format ssda903-csv 201_header.csv 201_episodes.csv 201_missing.csv
    fhir-server import --format ssda903-csv --collection-year 2024 201_header.csv 201_episodes.csv
    fhir-server import --manifest demo/manifest.json      # everything `fhir-server synth` wrote
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fhir_server.config import Settings
from fhir_server.repository.context import RequestContext

from . import collection_year as years
from .dates import today_uk
from .formats import available
from .loader import ImportSummary


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=available(), help="the format of FILE…")
    parser.add_argument("--manifest", type=Path,
                        help="a manifest.json (as `fhir-server synth` writes) naming files and their formats")
    parser.add_argument("--lenient", action="store_true",
                        help="load the valid records of a file with errors and report the rest "
                             "(default: a file with any error is rejected whole)")
    parser.add_argument("--collection-year", metavar="YYYY",
                        help="ssda903-csv: the collection year the return is for (2024: April 2023 to "
                             "March 2024); default: inferred from the latest date in the files. A manifest "
                             "gives it per entry (collection_year)")
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE",
                        help="one source (the SSDA903 tables of one return together)")


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from fhir_server import build_services
    from fhir_server.cli import CliError, require_migrated
    from fhir_server.collector import freeze_startup

    batches = _batches(args)
    services = build_services(settings)
    require_migrated(services.engine, settings)
    freeze_startup()  # one-shot process: later collections skip the model classes (fhir_server/collector.py)
    ctx = RequestContext.system(settings.base_url, client_id="fhir-server-cli")
    progress = Progress(total=len(batches))
    failed = 0
    for fmt, paths, year in batches:
        files = [(p.name, p.read_bytes()) for p in paths]
        progress.start(fmt, paths)
        summaries = _import(services, ctx, fmt, files, lenient=args.lenient, collection_year=year,
                            progress=progress)
        for summary in summaries:
            progress.done(summary)
            failed += 0 if summary.written else 1
    progress.finish()
    if failed:
        raise CliError(f"{failed} file(s) were not loaded; see the issues above")
    return 0


def _import(services: Any, ctx: RequestContext, fmt: str, files: list[tuple[str, bytes]], *,
            lenient: bool, collection_year: int | None, progress: "Progress") -> list[ImportSummary]:
    from .operation import import_files
    return import_files(services, ctx, fmt, files, lenient=lenient, collection_year=collection_year,
                        progress=progress.note)


def _batches(args: argparse.Namespace) -> list[tuple[str, list[Path], int | None]]:
    """(format, files, collection year) per source, every collection year checked before anything
    is read or written."""
    from fhir_server.cli import CliError

    if args.manifest:
        if args.files or args.format or args.collection_year is not None:
            raise CliError("give either --manifest or --format (and --collection-year) with files, not both")
        manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
        root = args.manifest.parent
        batches = []
        for entry in manifest.get("files", []):
            names = entry.get("paths") or [entry["path"]]
            year = entry.get("collection_year")
            batches.append((entry["format"], [root / name for name in names],
                            _collection_year(entry["format"], None if year is None else str(year),
                                             f"{args.manifest}: collection_year of {entry['format']} {names[0]}")))
        return batches
    if not args.format or not args.files:
        raise CliError("give --format and at least one FILE (or --manifest)")
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}")
    year = _collection_year(args.format, args.collection_year, "--collection-year")
    if args.format == "ssda903-csv":
        return [(args.format, list(args.files), year)]
    return [(args.format, [p], year) for p in args.files]


def _collection_year(fmt: str, value: str | None, where: str) -> int | None:
    """A collection year as given on the command line or in a manifest (the same rules as the
    operation's ``collection-year``); CliError naming ``where`` when it is not usable."""
    from fhir_server.cli import CliError

    try:
        return years.stated(fmt, value, today_uk())
    except ValueError as exc:
        raise CliError(f"{where}: {exc}") from None


class Progress:
    """One line per file on stderr while it runs, then its summary; totals at the end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.index = 0
        self.began = time.monotonic()
        self.file_began = self.began
        self.records = self.resources = self.issues = 0

    def start(self, fmt: str, paths: list[Path]) -> None:
        self.index += 1
        self.file_began = time.monotonic()
        names = ", ".join(p.name for p in paths)
        print(f"[{self.index}/{self.total}] {fmt}: {names}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"    {text} ({time.monotonic() - self.file_began:.1f} s)", file=sys.stderr, flush=True)

    def done(self, summary: ImportSummary) -> None:
        seconds = max(time.monotonic() - self.file_began, 1e-6)
        self.records += summary.records
        self.resources += summary.resources if summary.written else 0
        self.issues += len(summary.issues)
        state = "loaded" if summary.written else "NOT LOADED"
        print(f"    {state}: {summary.records} records ({summary.rejected_records} rejected), "
              f"{summary.resources} resources ({summary.created} created, {summary.updated} updated, "
              f"{summary.unchanged} unchanged), {len(summary.issues)} issues, "
              f"{summary.resources / seconds:,.0f} resources/s", file=sys.stderr, flush=True)
        for issue in summary.issues[:20]:
            print(f"      {issue.severity}: {issue.diagnostics}", file=sys.stderr)
        if len(summary.issues) > 20:
            print(f"      … and {len(summary.issues) - 20} more", file=sys.stderr)

    def finish(self) -> None:
        seconds = max(time.monotonic() - self.began, 1e-6)
        print(f"Imported {self.total} source(s): {self.records} records, {self.resources} resources, "
              f"{self.issues} issues in {seconds:.1f} s ({self.resources / seconds:,.0f} resources/s)",
              flush=True)
