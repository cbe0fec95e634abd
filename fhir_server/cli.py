"""The ``fhir-server`` command: ``serve``, ``migrate`` and ``reindex``.

Every subcommand is a :class:`Command`: a name, a help line, a function that adds its arguments and
a function ``run(args, settings) -> exit code``. A new subcommand (``import``, ``synth``; ``client``,
``dev-token`` and ``auth-key`` from fhir_server/auth/cli.py) is one more entry in :data:`COMMANDS`.
Settings come from the ``FHIR_*``
environment variables; expected failures raise :class:`CliError`, printed as one line, exit code 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from .auth import cli as auth_cli
from .config import REPO_ROOT, Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = REPO_ROOT / "migrations"
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


class CliError(Exception):
    """An expected failure: printed as ``fhir-server <command>: <message>``, exit code 1."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]
    # False for a command that forwards all its arguments (including --help) to its own parser
    own_help: bool = True


def say(message: str) -> None:
    print(message, flush=True)


def display_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


# -- migrations ------------------------------------------------------------------------------------

def alembic_config(database_url: str) -> "Config":
    """Alembic configuration for ``database_url``, located from the source tree (not the cwd)."""
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise CliError(f"No migrations at {MIGRATIONS_DIR}: install the project from its source tree "
                       "(pip install -e .) so that migrations/ sits next to fhir_server/")
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # passed as an attribute, not an ini option: configparser would choke on '%' in a password
    config.attributes["database_url"] = database_url
    # the CLI prints its own progress lines; alembic.ini's logging setup is for the `alembic` command
    config.attributes["skip_logging_config"] = True
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """An engine for ``settings.database_url``; a connection failure becomes a :class:`CliError`."""
    from .storage.db import make_engine

    engine = make_engine(settings.database_url, busy_timeout=settings.sqlite_busy_timeout)
    try:
        yield engine
    except OperationalError as exc:
        raise CliError(f"Cannot use the database {display_url(settings.database_url)}: "
                       f"{str(exc.orig).strip().splitlines()[0]}") from exc
    finally:
        engine.dispose()


def require_migrated(engine: Engine, settings: Settings) -> None:
    """Refuse to work on a database whose schema is not the one this code expects."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        state = "has no schema yet" if current is None else f"is at schema revision {current}"
        raise CliError(f"The database {display_url(settings.database_url)} {state}; this code needs "
                       f"revision {head}. Run `fhir-server migrate` (or `make migrate`) first.")


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default="head",
                        help="target revision (default: head); `alembic` offers downgrades and history")


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(settings.database_url)
    with database(settings) as engine:
        before = current_revision(engine)
        say(f"Migrating {display_url(settings.database_url)} (now at {before or 'no schema'}) "
            f"to {args.revision}...")
        try:
            command.upgrade(config, args.revision)
        except CommandError as exc:  # an unknown revision, or one behind the database
            raise CliError(str(exc)) from exc
        after = current_revision(engine)
    if before == after:
        say(f"Nothing to do: the schema is already at revision {after}.")
    else:
        say(f"Done: the schema is now at revision {after}.")
    if after == head_revision():
        say(f"Loaded {load_conformance(settings)}.")
    return 0


def load_conformance(settings: Settings) -> str:
    """Our conformance resources (profiles/) readable through the API, at their fixed ids."""
    from .conformance import ConformanceError, load_conformance_resources
    from .repository.sql import SqlRepository
    from .search.registry import SearchRegistry

    with database(settings) as engine:
        repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
        try:
            return str(load_conformance_resources(repo, settings))
        except ConformanceError as exc:
            raise CliError(str(exc)) from exc


# -- serve -----------------------------------------------------------------------------------------

def default_workers() -> int:
    """One process per core, each with a few threads (gthread): requests spend much of their time
    waiting on the database, and threads keep client connections alive between requests."""
    return os.cpu_count() or 1


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                        "0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"gunicorn worker processes (default 1 per core: {default_workers()} here)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    parser.add_argument("--timeout", type=int, default=120,
                        help="seconds before a silent worker is restarted (default 120: large "
                             "transaction bundles take a while)")
    parser.add_argument("--access-log", action="store_true", help="log every request to stdout")


def _base_url_warning(settings: Settings, host: str, port: int) -> str | None:
    base = urlsplit(settings.base_url)
    base_port = base.port or (443 if base.scheme == "https" else 80)
    local = {"127.0.0.1", "localhost", "0.0.0.0", "::", "::1"}
    if base_port != port and base.hostname in local and host in local:
        return (f"note: FHIR_BASE_URL is {settings.base_url}, so links in responses (Location, "
                f"fullUrl, paging) name port {base_port}, not {port}; set FHIR_BASE_URL to match")
    return None


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from gunicorn.app.base import BaseApplication

    workers = args.workers or default_workers()
    if workers < 1:
        raise CliError("--workers must be at least 1")
    with database(settings) as engine:
        require_migrated(engine, settings)

    options: dict[str, Any] = {
        "bind": f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": max(1, args.threads),
        "keepalive": 5,
        "timeout": args.timeout,
        "graceful_timeout": 30,
        "proc_name": "fhir-server",
        "errorlog": "-",
        "loglevel": "info",
        "accesslog": "-" if args.access_log else None,
        # each worker builds its own app (and pool) after the fork: nothing is shared across processes
        "preload_app": False,
        # gunicorn >= 24 opens a control socket at one fixed path per user: two servers on one machine
        # (a test run beside `make run`) would take it from each other, and we do not use gunicornc
        "control_socket_disable": True,
    }

    class FhirServerApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable is new in gunicorn 25.1
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from .wsgi import app

            return app

    warning = _base_url_warning(settings, args.host, args.port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    say(f"Serving the FHIR R4 API at {settings.base_url} (listening on {options['bind']}, {workers} "
        f"workers, database {display_url(settings.database_url)}). Ctrl-C stops.")
    FhirServerApplication().run()
    return 0


# -- reindex ---------------------------------------------------------------------------------------

def add_reindex_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", dest="res_type", metavar="TYPE",
                        help="only this resource type, e.g. Patient (default: every type)")


def run_reindex(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the search index rows from the stored resources (after search parameters change)."""
    from .fhir.resource_types import R4_RESOURCE_TYPES
    from .repository.sql import SqlRepository
    from .search.registry import SearchRegistry

    if args.res_type and args.res_type not in R4_RESOURCE_TYPES:
        raise CliError(f"{args.res_type!r} is not a FHIR R4 resource type")
    what = args.res_type or "every resource type"
    with database(settings) as engine:
        require_migrated(engine, settings)
        repo = SqlRepository(engine, SearchRegistry.load(settings.profiles_dir), settings)
        say(f"Reindexing {what} in {display_url(settings.database_url)}...")
        started = time.perf_counter()
        with repo.unit_of_work() as uow:
            count = uow.reindex(args.res_type)
    say(f"Done: reindexed {count} resources in {time.perf_counter() - started:.1f} s.")
    return 0


COMMANDS: list[Command] = [
    Command("serve", "serve the FHIR API with gunicorn", add_serve_arguments, run_serve),
    Command("migrate", "create or upgrade the database schema (alembic)", add_migrate_arguments, run_migrate),
    Command("reindex", "rebuild search index rows from stored resources", add_reindex_arguments, run_reindex),
    Command("import", "import agency files (CIN census, SSDA903, police, school census, ED, FHIR bundles)",
            lambda p: _data_command("mappings.cli", "add_import_arguments")(p),
            lambda a, s: _data_command("mappings.cli", "run_import")(a, s)),
    # auth hook (fhir_server/auth/cli.py): clients, development tokens, signing keys
    Command("client", "register, list, disable SMART backend-services clients", auth_cli.add_client_arguments,
            auth_cli.run_client),
    Command("dev-token", "mint a token from the development issuer (FHIR_AUTH_DEV_ISSUER=1 only)",
            auth_cli.add_dev_token_arguments, auth_cli.run_dev_token),
    Command("auth-key", "list or rotate the server's token signing keys", auth_cli.add_key_arguments,
            auth_cli.run_key),
    Command("risk", "risk scores: `risk recompute` rescores every child (after a new profiles/risk configuration)",
            lambda p: _data_command("triage.cli", "add_risk_arguments")(p),
            lambda a, s: _data_command("triage.cli", "run_risk")(a, s)),
    Command("synth", "write synthetic multi-agency source files (no real data) with their ground truth; "
                     "`fhir-server synth --help` for its options",
            lambda p: None,
            lambda a, s: _data_command("synthetic.cli", "main")(a.forwarded_args), own_help=False),
]


def _data_command(module: str, name: str) -> Any:
    """The agency-data commands live with the mappings and the generator (wired here, not imported
    by the server itself)."""
    from importlib import import_module
    return getattr(import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-server", description="FHIR R4 server for multi-agency children's safeguarding.",
        epilog="Configuration comes from FHIR_* environment variables; see README.md.")
    parser.add_argument("--database-url", help="overrides FHIR_DATABASE_URL for this command")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subcommands.add_parser(command.name, help=command.help, description=command.help,
                                     add_help=command.own_help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    forwarded = {c.name: c for c in COMMANDS if not c.own_help}
    if argv and argv[0] in forwarded:  # its own parser takes every argument, --help included
        return forwarded[argv[0]].run(argparse.Namespace(forwarded_args=argv[1:]), Settings.from_env())
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    if args.database_url:
        # the environment, not just Settings: gunicorn workers read it again when they import wsgi
        os.environ["FHIR_DATABASE_URL"] = args.database_url
    try:
        return args.run(args, Settings.from_env())
    except CliError as exc:
        print(f"fhir-server {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
