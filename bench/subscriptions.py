"""Subscriptions: write → notification latency under a steady load, and a fault test, with real
processes: ``fhir-server serve``, a Celery worker with its beat on Redis, and an HTTP receiver (a
subprocess of this script that checks every signature and logs what arrives).

1. Latency: one subscription to the escalation-Flag topic (``id-only``); ``--rate`` Flag writes per
   second (open loop: each write is due at its own time, whatever the previous ones did) for
   ``--seconds``. Latency per Flag = when the receiver got the notification naming it − when the
   POST that wrote it returned 201 (the commit). p50/p95/p99; target p95 ≤ 1 s.
   Baseline in the same run: raw PostgreSQL ``INSERT`` + ``pg_notify`` in one transaction at the
   same rate, received by a ``LISTEN``ing connection: the floor for "a committed row wakes a listener".
2. Fault test: the same load for ``--fault-seconds``; a third of the way in, the worker (with its beat)
   and the receiver are killed with SIGKILL for ``--outage`` seconds, then started again. Afterwards
   count Flags written vs Flags notified (distinct), event numbers without gaps, duplicates, and what
   ``$events`` holds. Target: zero lost.

    .venv/bin/python bench/subscriptions.py            # 60 s of load, 60 s outage (the issue's figures)
    .venv/bin/python bench/subscriptions.py --quick    # 15 s of load, 10 s outage
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
    p.add_argument("--quick", action="store_true", help="15 s of load, a 30 s fault run with a 10 s outage")
    p.add_argument("--rate", type=float, default=100.0, help="Flag writes per second")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the latency run")
    p.add_argument("--fault-seconds", type=float, default=150.0, help="length of the load in the fault test")
    p.add_argument("--outage", type=float, default=60.0, help="how long worker and receiver stay dead")
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
        args.seconds, args.fault_seconds, args.outage = 15.0, 30.0, 10.0
    return args


# -- the receiver (a subprocess, so that it can be killed) -----------------------------------------

def receive(port: int, out: Path) -> None:
    """Log one JSON line per notification: arrival time, subscription, type, event numbers, focus
    ids and whether the signature verifies. Answers 200 only after the line is written."""
    from subscriptions.signing import HEADER, verify

    log = out.open("a", buffering=1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            body = json.loads(raw)
            params = body["entry"][0]["resource"]["parameter"]
            kind = next(p["valueCode"] for p in params if p["name"] == "type")
            numbers, focus = [], []
            for p in params:
                if p["name"] == "notification-event":
                    parts = {q["name"]: q for q in p["part"]}
                    numbers.append(int(parts["event-number"]["valueString"]))
                    if "focus" in parts:
                        focus.append(parts["focus"]["valueReference"]["reference"].split("/_history")[0]
                                     .rsplit("/", 1)[-1])
            line = {"t": now, "sub": self.headers.get("X-SG-Subscription"), "type": kind, "numbers": numbers,
                    "focus": focus, "valid": verify(SECRET, raw, self.headers.get(HEADER, ""))}
            with lock:
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


def load(port: int, rate: float, seconds: float, threads: int = 32,
         events: dict[float, threading.Event] | None = None) -> list[tuple[str, float, float]]:
    """POST ``rate`` Flags a second for ``seconds`` (open loop) → (id, sent, committed) per 201."""
    total = int(rate * seconds)
    start = time.time() + 0.5
    done: list[tuple[str, float, float]] = []
    failures: list[str] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def run() -> None:
        client = harness.Client(port)
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
            status, data = client.call("POST", "/fhir/Flag", flag_body(i))
            committed = time.time()
            with lock:
                if status == 201:
                    done.append((json.loads(data)["id"], sent, committed))
                else:
                    failures.append(f"HTTP {status}")
        client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        raise RuntimeError(f"{len(failures)} writes failed: {failures[:3]}")
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


def latencies(log: Path, sub_id: str, written: list[tuple[str, float, float]]) -> list[float]:
    first: dict[str, float] = {}
    for line in read_log(log):
        if line["sub"] == sub_id:
            for f in line["focus"]:
                first.setdefault(f, line["t"])
    return sorted(first[i] - committed for i, _, committed in written if i in first)


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
    env = {**os.environ, "FHIR_DATABASE_URL": url, "FHIR_BASE_URL": f"http://127.0.0.1:{args.port}/fhir",
           "FHIR_AUTH_ENABLED": "0", "FHIR_BROKER_URL": args.redis_url, "FHIR_CELERY_QUEUE": queue,
           "FHIR_SUBSCRIPTION_SWEEP_SECONDS": "5", "FHIR_SUBSCRIPTION_MAX_BACKOFF": "30"}
    os.environ.update({k: env[k] for k in ("FHIR_BROKER_URL", "FHIR_CELERY_QUEUE", "FHIR_SUBSCRIPTION_SWEEP_SECONDS",
                                           "FHIR_SUBSCRIPTION_MAX_BACKOFF")})
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
            outage_at = args.fault_seconds / 3
            print(f"fault run: {args.rate:.0f} writes/s for {args.fault_seconds:.0f} s; worker and receiver "
                  f"killed at {outage_at:.0f} s for {args.outage:.0f} s", flush=True)
            result: dict[str, Any] = {}
            loader = threading.Thread(target=lambda: result.setdefault(
                "written", load(args.port, args.rate, args.fault_seconds, args.clients)))
            t0 = time.time()
            loader.start()
            time.sleep(outage_at)
            kill(worker)
            kill(receiver)
            procs.remove(worker)
            procs.remove(receiver)
            killed = time.time()
            time.sleep(args.outage)
            worker = start_worker(args, env, "worker-2")
            procs.append(worker)
            receiver = start_receiver(args, log2)
            procs.append(receiver)
            restarted = time.time()
            loader.join()
            written = result["written"]
            achieved = len(written) / (time.time() - t0)
            ids = {w[0] for w in written}
            recovery = wait_delivered(log2, sub_id, ids, 600)
            lines = [line for line in read_log(log2) if line["sub"] == sub_id]
            notified = {f for line in lines for f in line["focus"]}
            numbers = [n for line in lines if line["type"] == "event-notification" for n in line["numbers"]]
            distinct = sorted(set(numbers))
            gaps = (distinct[-1] - len(distinct)) if distinct else 0
            _, data = harness.request(args.port, "GET", f"/fhir/Subscription/{sub_id}/$status")
            status = {p["name"]: p for p in json.loads(data)["entry"][0]["resource"]["parameter"]}
            total_events = int(status["events-since-subscription-start"]["valueString"])
            lost = len(ids - notified)
            harness.print_table(
                f"Fault test: worker (with beat) and receiver SIGKILLed for {restarted - killed:.0f} s during "
                f"{args.fault_seconds:.0f} s of {args.rate:.0f} writes/s (achieved {achieved:.0f}/s)",
                ["what", "value"],
                [["Flags written (201)", len(written)],
                 ["events numbered (events-since-subscription-start)", total_events],
                 ["Flags notified (distinct)", len(notified & ids)],
                 ["lost", f"{lost} ({'met' if lost == 0 else 'MISSED'}: target 0)"],
                 ["event numbers received: distinct / with repeats", f"{len(distinct)} / {len(numbers)}"],
                 ["gaps in event numbers", gaps],
                 ["bad signatures", sum(1 for line in lines if not line["valid"])],
                 ["all delivered, seconds after the load ended", f"{recovery:.1f}" if recovery >= 0 else "NOT ALL"],
                 ["subscription status at the end", status["status"]["valueCode"]]])
    finally:
        for proc in procs:
            kill(proc)
        print(f"after the run: {harness.load_average()}")
        harness.release_database(args.pg_url, args.db, keep=args.keep)
        try:
            import redis
            redis.Redis.from_url(args.redis_url).delete(queue)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
