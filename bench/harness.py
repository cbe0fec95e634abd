"""What every benchmark shares: its own PostgreSQL database, the real server as a subprocess, HTTP
helpers, process memory from /proc, percentiles and a plain-text table of figures.

Nothing here is timed itself; the benchmark scripts time around these calls.
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEFAULT_PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/")


def db_url(pg_url: str, name: str) -> str:
    """``postgresql://user@host:port/<name>``: the server URL with its database replaced by ``name``."""
    parts = urlsplit(pg_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def admin_url(pg_url: str) -> str:
    return db_url(pg_url, "postgres")


def database_exists(pg_url: str, name: str) -> bool:
    with psycopg.connect(admin_url(pg_url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(pg_url: str, name: str) -> str:
    """(Re)create database ``name`` empty and return its URL."""
    drop_database(pg_url, name)
    with psycopg.connect(admin_url(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return db_url(pg_url, name)


def drop_database(pg_url: str, name: str) -> None:
    with psycopg.connect(admin_url(pg_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def release_database(pg_url: str, name: str, *, keep: bool, hint: str = "") -> None:
    """End of a benchmark: keep the database (saying so) or drop it."""
    if keep:
        print(f"kept database {name}{hint}")
    else:
        drop_database(pg_url, name)


def _cli_has(command: str) -> bool:
    cli = REPO_ROOT / "fhir_server" / "cli.py"
    return cli.exists() and f'Command("{command}"' in cli.read_text()


def cli(*args: str) -> list[str]:
    """``fhir-server ARGS`` run as ``python -m fhir_server.cli`` (works before ``pip install -e .``
    has put the console script in the venv)."""
    return [sys.executable, "-m", "fhir_server.cli", *args]


def migrate(url: str) -> str:
    """Create the schema the way production does (``fhir-server migrate``), or with
    ``storage.db.create_schema`` while the CLI has no migrate command. Returns which was used."""
    if _cli_has("migrate"):
        env = {**os.environ, "FHIR_DATABASE_URL": url}
        subprocess.run(cli("migrate"), env=env, check=True, cwd=REPO_ROOT,
                       stdout=subprocess.DEVNULL)
        return "fhir-server migrate"
    from fhir_server.storage.db import create_schema, make_engine

    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    return "storage.db.create_schema"


def analyze(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """The real server started as a subprocess (its own session, so one signal stops it all)."""

    url: str
    port: int
    workers: int
    proc: subprocess.Popen[bytes]
    command: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def pids(self) -> list[int]:
        """The server's process and all its descendants (gunicorn master and workers)."""
        found: list[int] = []
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                    todo.extend(int(c) for c in children)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return found

    def worker_pids(self) -> list[int]:
        pids = self.pids()
        return pids[1:] if len(pids) > 1 else pids

    def memory_kib(self) -> dict[int, dict[str, int]]:
        """VmRSS and VmHWM (peak RSS) in KiB of every server process, from /proc/<pid>/status."""
        out: dict[int, dict[str, int]] = {}
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except FileNotFoundError:
                continue
            values = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith(("VmRSS", "VmHWM"))}
            out[pid] = values
        return out


def server_command(port: int, workers: int, threads: int | None = None) -> list[str]:
    """``fhir-server serve`` when the CLI exists; gunicorn on the WSGI app otherwise. ``threads``: per
    worker (default: the server's own)."""
    if _cli_has("serve"):
        return cli("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                   "--timeout", "600", *(["--threads", str(threads)] if threads else []))
    app = "fhir_server.wsgi:app" if (REPO_ROOT / "fhir_server" / "wsgi.py").exists() else "fhir_server:create_app()"
    gunicorn = str(VENV_BIN / "gunicorn") if (VENV_BIN / "gunicorn").exists() else shutil.which("gunicorn") or "gunicorn"
    return [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", "gthread",
            "--threads", "1", "--timeout", "600", "--keep-alive", "30", app]


@contextmanager
def running_server(url: str, *, port: int = 8090, workers: int = 2, log: Path | None = None,
                   threads: int | None = None) -> Iterator[Server]:
    """Start the server on database ``url``, wait until /healthz answers, stop it afterwards."""
    command = server_command(port, workers, threads)
    # The benchmarks measure storage and search; auth overhead is measured on its own (docs/benchmarks.md).
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_BASE_URL": f"http://127.0.0.1:{port}/fhir",
           "FHIR_AUTH_ENABLED": os.environ.get("FHIR_AUTH_ENABLED", "0")}
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=out, start_new_session=True)
    server = Server(url, port, workers, proc, command)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(command)} (log: {log})")
            try:
                status, _ = request(port, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


# -- HTTP -----------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: far less client overhead than requests,
    which matters when the thing measured takes a millisecond). Reconnects if the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"Accept": "application/fhir+json"}
        if body is not None:
            hdrs["Content-Type"] = "application/fhir+json"
        hdrs.update(headers or {})
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return resp.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def time_http(port: int, paths: list[str], headers: dict[str, str] | None = None) -> tuple[list[float], list[bytes]]:
    """GET each path in turn on one keep-alive connection, with ``headers`` (a bearer token…):
    (seconds per request, bodies); non-200 raises."""
    client = Client(port)
    times, bodies = [], []
    try:
        for path in paths:
            t0 = time.perf_counter()
            status, body = client.call("GET", path, headers=headers)
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:400]!r}")
            bodies.append(body)
    finally:
        client.close()
    return times, bodies


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    client = Client(port)
    try:
        return client.call(method, path, body)
    finally:
        client.close()


# -- figures --------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(round(p / 100 * len(sorted_values) + 0.4999)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "mean": sum(ms) / len(ms) if ms else float("nan")}


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table (also valid Markdown), printed and returned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [f"\n### {title}\n",
             "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(ours: float, baseline: float) -> str:
    """How many times slower (or more) than the baseline, e.g. ``4.2x``."""
    if not baseline or baseline != baseline or ours != ours:
        return "-"
    return f"{ours / baseline:.1f}x"


def machine_summary() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (FileNotFoundError, ValueError, IndexError):
        mem_kib = 0
    with psycopg.connect(admin_url(DEFAULT_PG_URL)) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return (f"{cpus} CPUs ({model}), {mem_kib / 1024 / 1024:.0f} GiB RAM, PostgreSQL {pg}, "
            f"Python {sys.version.split()[0]}; {load_average()}")


def load_average() -> str:
    """The 1/5/15-minute load averages: figures taken on a busy machine are not comparable."""
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (FileNotFoundError, ValueError):
        return "load average unknown"
    return f"load average {one} / {five} / {fifteen} (1 / 5 / 15 min)"
