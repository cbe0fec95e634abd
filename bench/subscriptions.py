"""Subscriptions: write → notification latency under a steady load, and a fault test, with real
processes: ``fhir-server serve``, a Celery worker with its beat on Redis, and an HTTP receiver (a
subprocess of this script that checks every signature and logs what arrives).

1. Latency: one subscription to the escalation-Flag topic (``id-only``); ``--rate`` Flag writes per
   second (open loop: each write is due at its own time, whatever the previous ones did) for
   ``--seconds``. Latency per Flag = when the receiver got the notification naming it − when the
   POST that wrote it returned 201 (the commit). p50/p95/p99; target p95 ≤ 1 s.
   Baseline in the same run: raw PostgreSQL ``INSERT`` + ``pg_notify`` in one transaction at the
   same rate, received by a ``LISTEN``ing connection: the floor for "a committed row wakes a listener".
2. Fault test: the same load (every ``--update-every``-th write a PUT of a Flag written before) with
   the server's default sweep and backoff; at ``--outage-at`` the worker (with its beat) and the
   receiver are SIGKILLed for ``--outage`` seconds and started again; ``--broker-after`` seconds
   later the broker — a redis-server of the benchmark's own on ``--broker-port``, without
   persistence — is SIGKILLed for ``--broker-outage`` seconds and started again empty (every queued
   task lost). Afterwards: Flag versions written vs notified, gaps, repeats (at least once: a repeat
   must name the same focus, so receivers may dedupe by event number), first arrivals out of
   event-number order, a Flag's versions numbered out of version order, signatures, what ``$events``
   holds, and the write rate and latency in each phase. Target: zero lost, order kept.

    .venv/bin/python bench/subscriptions.py            # 60 s latency run; fault run: 60 s outage, 30 s broker outage
    .venv/bin/python bench/subscriptions.py --quick    # 15 s of load; 10 s outages
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import harness

SECRET = "bench-secret-0123456789abcdef"
TOPIC = "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SIGNING = "https://w3id.org/sg-fhir/StructureDefinition/subscription-signing-secret"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="15 s of load; a fault run with a 10 s outage of worker and receiver, then of the broker")
    p.add_argument("--rate", type=float, default=100.0, help="Flag writes per second")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the latency run")
    p.add_argument("--fault-seconds", type=float, default=150.0,
                   help="length of the load in the fault test (longer if the outages need it, see --tail)")
    p.add_argument("--outage-at", type=float, default=30.0, help="when worker and receiver are killed (s into the load)")
    p.add_argument("--outage", type=float, default=60.0, help="how long worker and receiver stay dead")
    p.add_argument("--broker-outage", type=float, default=30.0,
                   help="how long the broker stays dead (0: no broker outage; else the benchmark runs its own "
                        "redis-server on --broker-port and uses it instead of --redis-url)")
    p.add_argument("--broker-after", type=float, default=20.0,
                   help="seconds between the worker and receiver coming back and the broker being killed")
    p.add_argument("--broker-port", type=int, default=6390)
    p.add_argument("--tail", type=float, default=30.0, help="seconds of load after the last outage ended")
    p.add_argument("--update-every", type=int, default=4,
                   help="fault run: every Nth write updates a Flag written before (0: creates only)")
    p.add_argument("--recovery-timeout", type=float, default=900.0,
                   help="how long to wait, after the load, for every notification")
    p.add_argument("--sweep-seconds", type=float, default=None,
                   help="FHIR_SUBSCRIPTION_SWEEP_SECONDS (default: the server's, 15 s)")
    p.add_argument("--max-backoff", type=int, default=None,
                   help="FHIR_SUBSCRIPTION_MAX_BACKOFF (default: the server's, 3600 s)")
    p.add_argument("--workers", type=int, default=2, help="server (gunicorn) workers")
    p.add_argument("--threads", type=int, default=None, help="threads per server worker (default: the server's)")
    p.add_argument("--concurrency", type=int, default=4, help="Celery worker threads")
    p.add_argument("--clients", type=int, default=32,
                   help="client connections writing (open loop: enough that a slow answer does not hold back "
                        "the next write; 8 capped the offered load at 8 / write latency)")
    p.add_argument("--no-fault", action="store_true", help="the latency run only")
    p.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--db", default="bench_subscriptions")
    p.add_argument("--port", type=int, default=8093)
    p.add_argument("--receiver-port", type=int, default=8094)
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--log-dir", type=Path, default=Path("/tmp/bench-subscriptions"))
    p.add_argument("--receive", type=Path, help=argparse.SUPPRESS)  # run as the receiver subprocess
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.fault_seconds, args.outage_at, args.outage = 15.0, 30.0, 5.0, 10.0
        args.broker_outage, args.broker_after, args.tail = min(args.broker_outage, 10.0), 5.0, 10.0
    return args


# -- the receiver (a subprocess, so that it can be killed) -----------------------------------------

def receive(port: int, out: Path) -> None:
    """Log one JSON line per notification: arrival time, subscription, type, event numbers, focus
    ids and whether the signature verifies. Answers 200 only after the line is written."""
    from subscriptions.signing import HEADER, verify

    log = out.open("a", buffering=1)
    lock = threading.Lock()
    seq = iter(range(time.time_ns(), 2 ** 63))  # increasing across a restart of the receiver too

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            body = json.loads(raw)
            params = body["entry"][0]["resource"]["parameter"]
            kind = next(p["valueCode"] for p in params if p["name"] == "type")
            numbers, focus, versions = [], [], []
            for p in params:
                if p["name"] == "notification-event":
                    parts = {q["name"]: q for q in p["part"]}
                    numbers.append(int(parts["event-number"]["valueString"]))
                    if "focus" in parts:
                        res_id, version = focus_of(parts["focus"]["valueReference"]["reference"])
                        focus.append(res_id)
                        versions.append(version)
            line = {"t": now, "sub": self.headers.get("X-SG-Subscription"), "type": kind, "numbers": numbers,
                    "focus": focus, "versions": versions, "valid": verify(SECRET, raw, self.headers.get(HEADER, ""))}
            with lock:  # seq: the order in which notifications arrived (finer than the clock)
                line["seq"] = next(seq)
                log.write(json.dumps(line) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_receiver(args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--receive", str(out),
                             "--receiver-port", str(args.receiver_port)],
                            cwd=harness.REPO_ROOT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", args.receiver_port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def start_worker(args: argparse.Namespace, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    log = (args.log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fhir_server.worker", "worker", "-B",
         "-s", str(args.log_dir / f"{name}-beat"), "--pool", "threads", "--concurrency", str(args.concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=harness.REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the load --------------------------------------------------------------------------------------

def flag_body(i: int) -> bytes:
    return json.dumps({
        "resourceType": "Flag", "status": "active",
        "category": [{"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/flag-category",
                                  "code": "safeguarding"}]}],
        "code": {"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/safeguarding-flag",
                             "code": "escalation"}]},
        "subject": {"reference": f"Patient/bench-child-{i % 500}"},
    }).encode()


def focus_of(reference: str) -> tuple[str, int]:
    """``…/Flag/<id>/_history/<v>`` → (id, v)."""
    path, _, version = reference.partition("/_history/")
    return path.rsplit("/", 1)[-1], int(version or 0)


def load(port: int, rate: float, seconds: float, threads: int = 32, update_every: int = 0,
         refused: list[str] | None = None) -> list[tuple[str, int, float, float]]:
    """Write ``rate`` Flags a second for ``seconds`` (open loop) → (id, version, sent, committed) per
    2xx. Every ``update_every``-th write (0: none) is a PUT of the Flag its client thread wrote last,
    so that the order of one resource's versions can be checked; the others create a Flag."""
    total = int(rate * seconds)
    start = time.time() + 0.5
    done: list[tuple[str, int, float, float]] = []
    failures: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def run() -> None:
        client = harness.Client(port)
        last: dict[str, Any] | None = None
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rate
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            sent = time.time()
            if update_every and last is not None and i % update_every == update_every - 1:
                last["status"] = "inactive" if last["status"] == "active" else "active"
                status, data = client.call("PUT", f"/fhir/Flag/{last['id']}", json.dumps(last).encode())
            else:
                status, data = client.call("POST", "/fhir/Flag", flag_body(i))
            committed = time.time()
            with lock:
                if status in (200, 201):
                    last = json.loads(data)
                    done.append((last["id"], int(last["meta"]["versionId"]), sent, committed))
                else:
                    failures.append(f"HTTP {status}: {data[:160]!r}")
        client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        print(f"{len(failures)} writes failed (not counted as written): {sorted(set(failures))[:3]}", flush=True)
        if len(failures) > total // 10:
            raise RuntimeError(f"{len(failures)} of {total} writes failed")
    if refused is not None:
        refused.extend(failures)
    return done


def subscribe(port: int, receiver_port: int) -> str:
    body = json.dumps({
        "resourceType": "Subscription", "status": "requested", "reason": "benchmark", "criteria": TOPIC,
        "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{receiver_port}/notify",
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
                    "extension": [{"url": SIGNING, "valueString": SECRET}]},
    }).encode()
    status, data = harness.request(port, "POST", "/fhir/Subscription", body)
    if status != 201:
        raise RuntimeError(f"subscription refused: {status} {data[:300]!r}")
    sub_id = json.loads(data)["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, data = harness.request(port, "GET", f"/fhir/Subscription/{sub_id}")
        if json.loads(data)["status"] == "active":
            return sub_id
        time.sleep(0.2)
    raise RuntimeError("the subscription was not activated within 60 s")


def wait_delivered(log: Path, sub_id: str, ids: set[str], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        seen = {f for line in read_log(log) if line["sub"] == sub_id for f in line["focus"]}
        if ids <= seen:
            return time.monotonic() - started
        time.sleep(0.5)
    return -1.0


def latencies(log: Path, sub_id: str, written: list[tuple[str, int, float, float]]) -> list[float]:
    first: dict[str, float] = {}
    for line in read_log(log):
        if line["sub"] == sub_id:
            for f in line["focus"]:
                first.setdefault(f, line["t"])
    return sorted(first[i] - committed for i, _, _, committed in written if i in first)


def wait_notified(log: Path, sub_id: str, wanted: set[tuple[str, int]], timeout: float) -> float:
    """Seconds until every (Flag id, version) in ``wanted`` was notified; -1 if not within ``timeout``."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        seen = {(f, v) for line in read_log(log) if line["sub"] == sub_id
                for f, v in zip(line["focus"], line["versions"])}
        if wanted <= seen:
            return time.monotonic() - started
        time.sleep(0.5)
    return -1.0


class FaultCheck:
    """What the receiver's log says about one subscription's notifications: lost, in order, repeated.

    In order: the first arrival of each event number comes after the first arrival of every lower
    number (so a receiver that skips numbers it has already seen processes them in order), and one
    Flag's versions are numbered in version order. At-least-once allows repeats (a notification sent
    but not recorded as sent when a worker died): each repeat must name the same focus as the first
    arrival of its number, so deduplicating by event number is safe."""

    def __init__(self, lines: list[dict[str, Any]], sub_id: str, wanted: set[tuple[str, int]]) -> None:
        lines = sorted((line for line in lines if line["sub"] == sub_id), key=lambda line: line["seq"])
        self.lines = lines
        self.wanted = wanted
        self.bad_signatures = sum(1 for line in lines if not line["valid"])
        self.focus_of: dict[int, tuple[str, int]] = {}
        self.received = 0
        self.out_of_order = 0  # first arrivals below a number already seen
        self.not_ascending = 0  # notifications whose numbers are not consecutive ascending
        self.conflicting_repeats = 0  # a repeated number naming another focus
        self.repeat_notifications = 0  # notifications made only of numbers already seen
        highest = 0
        for line in lines:
            if line["type"] != "event-notification":
                continue
            numbers = line["numbers"]
            if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
                self.not_ascending += 1
            if numbers and all(n in self.focus_of for n in numbers):
                self.repeat_notifications += 1
            for n, f, v in zip(numbers, line["focus"], line["versions"]):
                self.received += 1
                if n in self.focus_of:
                    self.conflicting_repeats += self.focus_of[n] != (f, v)
                    continue
                self.focus_of[n] = (f, v)
                if n < highest:
                    self.out_of_order += 1
                highest = max(highest, n)
        self.notified = set(self.focus_of.values())
        self.lost = wanted - self.notified
        numbers_of: dict[str, list[tuple[int, int]]] = {}
        for n, (f, v) in self.focus_of.items():
            numbers_of.setdefault(f, []).append((v, n))
        self.versions_misordered = sum(1 for pairs in numbers_of.values()
                                       if [n for _, n in sorted(pairs)] != sorted(n for _, n in pairs))
        self.resources_updated = sum(1 for pairs in numbers_of.values() if len(pairs) > 1)

    def gaps(self, total: int) -> int:
        return len(set(range(1, total + 1)) - set(self.focus_of))

    def ok(self, total: int, in_events: tuple[int, int]) -> bool:
        return not (self.lost or self.out_of_order or self.not_ascending or self.conflicting_repeats
                    or self.versions_misordered or self.bad_signatures or self.gaps(total)
                    or in_events != (total, 0) or len(self.notified) != total)

    def rows(self, total: int, in_events: tuple[int, int], recovery: float,
             status: dict[str, Any]) -> list[list[Any]]:
        lost = len(self.lost)
        distinct = len(self.focus_of)
        return [
            ["writes answered 2xx (creates + updates: Flag versions)", len(self.wanted)],
            ["events numbered (events-since-subscription-start)", total],
            ["Flag versions notified (distinct)", len(self.notified & self.wanted)],
            ["**lost**", f"**{lost}** ({'met' if lost == 0 else 'MISSED'}: target 0)"],
            ["event numbers received: distinct / with repeats", f"{distinct:,} / {self.received:,}"],
            ["notifications that only repeated numbers already received", self.repeat_notifications],
            ["repeats naming another focus than the first arrival (dedupe by number unsafe)",
             self.conflicting_repeats],
            ["gaps in event numbers 1..events-since-subscription-start", self.gaps(total)],
            ["first arrivals out of event-number order", self.out_of_order],
            ["notifications whose numbers are not consecutive ascending", self.not_ascending],
            [f"Flags updated during the run / whose versions were numbered out of version order",
             f"{self.resources_updated:,} / {self.versions_misordered}"],
            ["bad signatures", self.bad_signatures],
            ["$events: events returned / differing from what the receiver got", f"{in_events[0]:,} / {in_events[1]}"],
            ["all delivered, seconds after the load ended", f"{recovery:.1f}" if recovery >= 0 else "NOT ALL"],
            ["subscription status at the end", status["status"]["valueCode"]],
        ]


def events_available(port: int, sub_id: str, total: int, focus_of: dict[int, tuple[str, int]] | None = None
                     ) -> tuple[int, int]:
    """Page through ``$events`` 1..``total`` (1,000 a call): (events returned, how many differ from
    ``focus_of``, the receiver's number → focus, when given)."""
    returned, differing = 0, 0
    for since in range(1, total + 1, 1000):
        until = min(total, since + 999)
        status, data = harness.request(port, "GET", f"/fhir/Subscription/{sub_id}/$events?"
                                                    f"eventsSinceNumber={since}&eventsUntilNumber={until}")
        if status != 200:
            raise RuntimeError(f"$events answered {status}: {data[:300]!r}")
        params = json.loads(data)["entry"][0]["resource"]["parameter"]
        for p in params:
            if p["name"] != "notification-event":
                continue
            parts = {q["name"]: q for q in p["part"]}
            returned += 1
            number = int(parts["event-number"]["valueString"])
            if focus_of is not None and focus_of.get(number) != focus_of_ref(parts):
                differing += 1
    return returned, differing


def focus_of_ref(parts: dict[str, Any]) -> tuple[str, int] | None:
    return focus_of(parts["focus"]["valueReference"]["reference"]) if "focus" in parts else None


# -- the broker: a redis-server of the benchmark's own, so that killing it harms nobody -------------

class Broker:
    """``redis-server`` on ``port`` without persistence: killed with SIGKILL and started again, it
    comes back empty (every queued and unacknowledged task lost), the harshest broker failure."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            raise RuntimeError(f"port {self.port} is taken: the benchmark kills its broker, so it needs its own")
        except OSError:
            pass
        out = self.log.open("ab")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)
            self.proc = None


def write_phases(written: list[tuple[str, int, float, float]], marks: list[tuple[str, float]]) -> list[list[Any]]:
    """Rate and latency of the writes between consecutive ``marks`` (name, time)."""
    rows = []
    for (name, begin), (_, end) in zip(marks, marks[1:]):
        took = sorted(c - s for _, _, s, c in written if begin <= c < end)
        summary = harness.latency_summary(took)
        rows.append([f"{begin - marks[0][1]:.0f}-{end - marks[0][1]:.0f} s: {name}", f"{end - begin:.0f}", len(took),
                     len(took) / (end - begin) if end > begin else 0.0, summary["p50"], summary["p95"],
                     max(took) * 1000 if took else float("nan")])
    return rows


def fault_plan(args: argparse.Namespace) -> dict[str, float]:
    """When the broker goes down (after the worker and receiver are back) and when the load ends."""
    back = args.outage_at + args.outage
    broker_at = back + args.broker_after
    last = broker_at + args.broker_outage if args.broker_outage else back
    return {"broker_at": broker_at, "end": max(args.fault_seconds, last + args.tail)}


# -- the baseline: raw PostgreSQL INSERT + NOTIFY → LISTEN ---------------------------------------------

def listen_notify_baseline(url: str, rate: float, seconds: float) -> list[float]:
    received: dict[str, float] = {}
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN bench_events")
            ready.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    received.setdefault(note.payload, time.time())

    listener = threading.Thread(target=listen)
    listener.start()
    ready.wait(10)
    committed: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_notify (id text PRIMARY KEY, content jsonb)")
        conn.commit()
        start = time.time() + 0.2
        for i in range(int(rate * seconds)):
            wait = start + i / rate - time.time()
            if wait > 0:
                time.sleep(wait)
            key = uuid.uuid4().hex
            conn.execute("INSERT INTO bench_notify VALUES (%s, %s)", (key, flag_body(i).decode()))
            conn.execute("SELECT pg_notify('bench_events', %s)", (key,))
            conn.commit()
            committed[key] = time.time()
        conn.execute("DROP TABLE bench_notify")
        conn.commit()
    time.sleep(1.0)
    stop.set()
    listener.join()
    return sorted(received[k] - t for k, t in committed.items() if k in received)


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.receive:
        receive(args.receiver_port, args.receive)
        return 0
    print(f"machine: {harness.machine_summary()}")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    queue = f"bench-subscriptions-{uuid.uuid4().hex[:8]}"
    url = harness.create_database(args.pg_url, args.db)
    print(f"database {args.db}: schema by {harness.migrate(url)}", flush=True)
    broker = Broker(args.broker_port, args.log_dir / "redis.log") if args.broker_outage and not args.no_fault else None
    if broker:
        broker.start()
        args.redis_url = broker.url
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_BASE_URL": f"http://127.0.0.1:{args.port}/fhir",
           "FHIR_AUTH_ENABLED": "0", "FHIR_BROKER_URL": args.redis_url, "FHIR_CELERY_QUEUE": queue}
    if args.sweep_seconds is not None:
        env["FHIR_SUBSCRIPTION_SWEEP_SECONDS"] = str(args.sweep_seconds)
    if args.max_backoff is not None:
        env["FHIR_SUBSCRIPTION_MAX_BACKOFF"] = str(args.max_backoff)
    shared = ("FHIR_BROKER_URL", "FHIR_CELERY_QUEUE", "FHIR_SUBSCRIPTION_SWEEP_SECONDS", "FHIR_SUBSCRIPTION_MAX_BACKOFF")
    os.environ.update({k: env[k] for k in shared if k in env})
    print(f"broker {args.redis_url}, queue {queue}, subscription sweep "
          f"{env.get('FHIR_SUBSCRIPTION_SWEEP_SECONDS', 'default')} s, max backoff "
          f"{env.get('FHIR_SUBSCRIPTION_MAX_BACKOFF', 'default')} s", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with harness.running_server(url, port=args.port, workers=args.workers, threads=args.threads,
                                    log=args.log_dir / "server.log"):
            worker = start_worker(args, env, "worker-1")
            procs.append(worker)
            log1 = args.log_dir / f"received-{queue}-latency.jsonl"
            receiver = start_receiver(args, log1)
            procs.append(receiver)

            # 1. latency
            sub_id = subscribe(args.port, args.receiver_port)
            # warm-up: pools, imports, the worker's services; the run starts once the warm-up's
            # notifications have all arrived (a worker still starting would count as latency)
            warm = load(args.port, args.rate, 2.0, args.clients)
            if wait_delivered(log1, sub_id, {w[0] for w in warm}, 300) < 0:
                raise RuntimeError("the warm-up writes were not all notified within 300 s")
            print(f"latency run: {args.rate:.0f} writes/s for {args.seconds:.0f} s", flush=True)
            t0 = time.time()
            written = load(args.port, args.rate, args.seconds, args.clients)
            achieved = len(written) / (time.time() - t0)
            tail = wait_delivered(log1, sub_id, {w[0] for w in written}, 120)
            lat = latencies(log1, sub_id, written)
            invalid = sum(1 for line in read_log(log1) if not line["valid"])
            kill(receiver)
            procs.remove(receiver)
            harness.request(args.port, "DELETE", f"/fhir/Subscription/{sub_id}")

            base = listen_notify_baseline(url, args.rate, min(args.seconds, 20.0))
            ours = harness.latency_summary(lat)
            floor = harness.latency_summary(base)
            rows = [
                ["server: Flag POST 201 → signed notification received", len(lat), ours["p50"], ours["p95"],
                 ours["p99"], "met" if ours["p95"] <= 1000 else "MISSED"],
                ["baseline: INSERT + pg_notify commit → LISTEN", len(base), floor["p50"], floor["p95"],
                 floor["p99"], "-"],
                ["ratio server / baseline (p95)", "", "", harness.ratio(ours["p95"], floor["p95"]), "", ""],
            ]
            harness.print_table(
                f"Write → notification latency at {args.rate:.0f} writes/s for {args.seconds:.0f} s "
                f"(achieved {achieved:.0f}/s; {len(written)} written, {len(lat)} notified, {invalid} bad signatures, "
                f"last arrived {tail:.1f} s after the load)",
                ["what", "events", "p50 ms", "p95 ms", "p99 ms", "target p95 <= 1 s"], rows)

            if args.no_fault:
                return 0
            # 2. fault test
            log2 = args.log_dir / f"received-{queue}-fault.jsonl"
            receiver = start_receiver(args, log2)
            procs.append(receiver)
            sub_id = subscribe(args.port, args.receiver_port)
            plan = fault_plan(args)
            print(f"fault run: {args.rate:.0f} writes/s for {plan['end']:.0f} s (every {args.update_every}th a PUT); "
                  f"worker (with beat) and receiver SIGKILLed at {args.outage_at:.0f} s for {args.outage:.0f} s"
                  + (f"; the broker (redis-server :{args.broker_port}) SIGKILLed at {plan['broker_at']:.0f} s for "
                     f"{args.broker_outage:.0f} s, restarted empty" if broker else ""), flush=True)
            result: dict[str, Any] = {}
            refused: list[str] = []
            loader = threading.Thread(target=lambda: result.setdefault(
                "written", load(args.port, args.rate, plan["end"], args.clients, args.update_every, refused)))
            t0 = time.time()
            loader.start()
            timeline: list[str] = []
            marks: list[tuple[str, float]] = [("all up", t0)]

            def at(second: float) -> None:
                time.sleep(max(0.0, t0 + second - time.time()))

            at(args.outage_at)
            kill(worker)
            kill(receiver)
            procs.remove(worker)
            procs.remove(receiver)
            timeline.append(f"{time.time() - t0:.0f} s worker and receiver killed")
            marks.append(("worker and receiver down", time.time()))
            at(args.outage_at + args.outage)
            worker = start_worker(args, env, "worker-2")
            procs.append(worker)
            receiver = start_receiver(args, log2)
            procs.append(receiver)
            timeline.append(f"{time.time() - t0:.0f} s worker and receiver started again")
            marks.append(("all up", time.time()))
            # from now on the worker runs supervised, as deployed (docker-compose.yml: restart):
            # Celery may exit when its broker vanishes
            stop_supervising = threading.Event()
            worker_exits: list[str] = []

            def supervise() -> None:
                nonlocal worker
                while not stop_supervising.wait(0.5):
                    if worker.poll() is not None:
                        worker_exits.append(f"{time.time() - t0:.0f} s (code {worker.returncode})")
                        procs.remove(worker)
                        worker = start_worker(args, env, f"worker-{len(worker_exits) + 2}")
                        procs.append(worker)

            supervisor = threading.Thread(target=supervise, daemon=True)
            supervisor.start()
            if broker:
                at(plan["broker_at"])
                broker.kill()
                timeline.append(f"{time.time() - t0:.0f} s broker killed")
                marks.append(("broker down", time.time()))
                at(plan["broker_at"] + args.broker_outage)
                broker.start()
                timeline.append(f"{time.time() - t0:.0f} s broker started again (empty)")
                marks.append(("all up", time.time()))
            loader.join()
            marks.append(("load ended", time.time()))
            written = result["written"]
            achieved = len(written) / (time.time() - t0)
            timeline.append(f"{time.time() - t0:.0f} s load ended")
            wanted = {(w[0], w[1]) for w in written}
            recovery = wait_notified(log2, sub_id, wanted, args.recovery_timeout)
            check = FaultCheck(read_log(log2), sub_id, wanted)
            stop_supervising.set()
            supervisor.join()
            if worker_exits:
                timeline.append(f"the worker exited at {', '.join(worker_exits)} and was started again")
            if refused:
                timeline.append(f"{len(refused)} writes refused ({', '.join(sorted({r[:8] for r in refused}))}), "
                                f"not counted")
            _, data = harness.request(args.port, "GET", f"/fhir/Subscription/{sub_id}/$status")
            status = {p["name"]: p for p in json.loads(data)["entry"][0]["resource"]["parameter"]}
            total_events = int(status["events-since-subscription-start"]["valueString"])
            in_events = events_available(args.port, sub_id, total_events, check.focus_of)
            harness.print_table(
                f"Fault test: {plan['end']:.0f} s of {args.rate:.0f} writes/s (achieved {achieved:.0f}/s); "
                + "; ".join(timeline), ["what", "value"], check.rows(total_events, in_events, recovery, status))
            harness.print_table("The writes during the fault run, by phase (a write's time: its 2xx)",
                                ["phase", "seconds", "writes", "writes/s", "p50 ms", "p95 ms", "max ms"],
                                write_phases(written, marks))
            (args.log_dir / f"written-{queue}.json").write_text(json.dumps({"written": written, "marks": marks}))
            print(f"worker logs: {args.log_dir}/worker-*.log; received: {log2}")
            return 0 if check.ok(total_events, in_events) and recovery >= 0 else 1
    finally:
        for proc in procs:
            kill(proc)
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep)
        if broker:
            broker.kill()
        else:
            try:
                import redis
                redis.Redis.from_url(args.redis_url).delete(queue)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
