"""``fhir-server risk``: recompute every child's score (after publishing a new configuration) and show
the configuration in use."""
from __future__ import annotations

import argparse
import sys
import time

from fhir_server.config import Settings


def add_risk_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="risk_command", metavar="ACTION", required=True)
    recompute = sub.add_parser("recompute", help="rescore every child with the current configuration")
    recompute.add_argument("--batch", type=int, default=2000, help="children per transaction (default 2000)")
    recompute.add_argument("--jobs", type=int, default=1,
                           help="processes scoring batches side by side (PostgreSQL; default 1)")
    sub.add_parser("config", help="print the configuration in use (id|version and where it is read from)")


def run_risk(args: argparse.Namespace, settings: Settings) -> int:
    from fhir_server.cli import database, display_url, require_migrated, say
    from fhir_server.repository.sql import SqlRepository
    from fhir_server.search.registry import SearchRegistry

    from .config import config_path, load_config

    config = load_config(settings.profiles_dir)
    if args.risk_command == "config":
        say(f"{config.label} from {config_path(settings.profiles_dir)}")
        return 0
    from .recompute import recompute_all

    with database(settings) as engine:
        require_migrated(engine, settings)
        repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
        say(f"Recomputing risk scores with {config.label} in {display_url(settings.database_url)}...")
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            print(f"  {done}/{total} children", file=sys.stderr, flush=True)

        stats = recompute_all(repo, config, batch=max(args.batch, 1), jobs=max(args.jobs, 1), progress=progress)
    elapsed = time.perf_counter() - started
    say(f"Done: {stats.scored} children scored in {elapsed:.1f} s ({stats.scored / max(elapsed, 1e-9):.0f}/s); "
        f"{stats.changed} changed, {stats.flags_raised} Flags raised, {stats.flags_updated} updated, "
        f"{stats.flags_closed} closed, {stats.removed} rows removed.")
    return 0
