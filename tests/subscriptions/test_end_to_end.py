"""End to end with real processes: ``fhir-server serve`` (gunicorn), a Celery worker with its beat
and Redis, and an HTTP receiver. A Flag written over HTTP reaches the receiver as a valid, signed
notification; with the worker killed, a later Flag is delivered once a new worker starts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from fhir_server.cli import main
from fhir_server.config import REPO_ROOT
from subscriptions.signing import HEADER, verify
from tests.conftest import service_unavailable
from tests.functional.test_cli import free_port, serving
from tests.integration.test_migrations import empty_database_url, scratch_postgres_url  # noqa: F401 - fixtures

from .conftest import CHILD_DATA, SECRET, flag, subscription
from .test_import_to_notification import LA_TAG, NHS, TRIGGER, causes, notification

REDIS_URL = os.environ.get("FHIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no Redis here"
        service_unavailable(f"Redis is not reachable at {REDIS_URL}: {exc.__class__.__name__}")


@contextmanager
def celery_worker(env: dict[str, str], beat_file: Path, log: Any) -> Iterator[subprocess.Popen]:
    """``celery -A fhir_server.worker worker -B`` on the test's own queue; killed on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fhir_server.worker", "worker", "-B", "-s", str(beat_file),
         "--pool", "threads", "--concurrency", "4", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its children (the embedded beat): nothing is shut down cleanly."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Deployment:
    """A migrated empty database, the environment of ``fhir-server serve`` and a Celery worker on a
    queue of the test's own, and the worker's log."""

    port: int
    base: str
    env: dict[str, str]
    log: IO[str]
    log_path: Path


@pytest.fixture
def deployment(empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
               capsys: pytest.CaptureFixture[str]) -> Iterator[Deployment]:
    redis_or_skip()
    import redis

    monkeypatch.setenv("FHIR_DATABASE_URL", empty_database_url)
    assert main(["migrate"]) == 0
    capsys.readouterr()
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    queue = f"fhir-subscriptions-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FHIR_DATABASE_URL": empty_database_url, "FHIR_BASE_URL": base, "FHIR_AUTH_ENABLED": "0",
           "FHIR_BROKER_URL": REDIS_URL, "FHIR_CELERY_QUEUE": queue, "FHIR_SUBSCRIPTION_SWEEP_SECONDS": "1"}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        try:
            yield Deployment(port, base, env, log, log_path)
        finally:
            redis.Redis.from_url(REDIS_URL).delete(queue)


POLICE_CSV = Path(__file__).resolve().parents[1] / "mappings" / "fixtures" / "police" / "notifications.csv"


def import_police_notification_for_a_followed_child(base: str, receiver) -> None:
    """The police force's record of Amelia (person P100231 of force 20) exists before the import; a
    subscriber follows it; ``$import-agency-data`` of the force's notifications file updates that
    record (matched on the force's person identifier) and adds the notification's Observations, each
    reaching the subscriber as a signed notification."""
    child = {"resourceType": "Patient", "id": "police-20-p100231",
             "meta": {"tag": [{"system": "https://w3id.org/sg-fhir/CodeSystem/source-agency", "code": "police/20"}]},
             "identifier": [{"system": "https://w3id.org/sg-fhir/Id/20/person", "value": "P100231", "use": "usual"}]}
    assert requests.put(f"{base}/Patient/{child['id']}", headers=FHIR, json=child, timeout=30).status_code == 201
    created = requests.post(f"{base}/Subscription", headers=FHIR, timeout=30, json=subscription(
        receiver.url, topic=CHILD_DATA, filters=(f"patient=Patient/{child['id']}",), content="id-only"))
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    wait_until(lambda: requests.get(f"{base}/Subscription/{sub_id}", timeout=30).json()["status"] == "active",
               60, "the handshake of the child-agency-data subscription")

    imported = requests.post(f"{base}/$import-agency-data", timeout=120,
                             data={"format": "police-notifications-csv"},
                             files={"file": ("notifications.csv", POLICE_CSV.read_bytes(), "text/csv")})
    assert imported.status_code == 200, imported.text

    def focus() -> list[str]:
        return [e["focus"]["reference"].split("/fhir/", 1)[1] for r in receiver.of("event-notification")
                if r.headers["X-SG-Subscription"] == sub_id for e in r.status()["notification-event"]]

    wait_until(lambda: any(f.startswith("Observation/") for f in focus()), 60,
               "a notification of the imported police notification")
    assert any(f.startswith(f"Patient/{child['id']}/") for f in focus())  # the record itself was updated
    for received in receiver.of("event-notification"):
        if received.headers["X-SG-Subscription"] == sub_id:
            assert verify(SECRET, received.raw, received.headers[HEADER])


def test_a_flag_reaches_a_real_receiver_through_redis_and_a_celery_worker(
        deployment: Deployment, empty_database_url: str, receiver, tmp_path: Path) -> None:  # noqa: F811
    base, env, log = deployment.base, deployment.env, deployment.log
    try:
        with serving(deployment.port, env), celery_worker(env, tmp_path / "beat-1", log) as worker:
            created = requests.post(f"{base}/Subscription", headers=FHIR, timeout=30, json=subscription(
                receiver.url, filters=("Flag?patient=Patient/e2e-child",), content="full-resource",
                headers=("Authorization: Bearer receiver-token",)))
            assert created.status_code == 201, created.text
            sub_id = created.json()["id"]
            wait_until(lambda: requests.get(f"{base}/Subscription/{sub_id}", timeout=30).json()["status"] == "active",
                       60, "the handshake to activate the subscription")

            written = requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json=flag("Patient/e2e-child", band="red"))
            assert written.status_code == 201, written.text
            wait_until(lambda: receiver.event_numbers(sub_id) == [1], 60, "the notification of the Flag")
            notification = receiver.of("event-notification")[0]
            assert verify(SECRET, notification.raw, notification.headers[HEADER])
            assert notification.headers["Authorization"] == "Bearer receiver-token"
            assert notification.body["type"] == "history"
            assert notification.body["entry"][1]["resource"]["id"] == written.json()["id"]

            # a police notification imported for a child the subscriber follows (child-agency-data)
            import_police_notification_for_a_followed_child(base, receiver)

            # the worker dies; a Flag written meanwhile waits in the database and the broker
            kill(worker)
            again = requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json=flag("Patient/e2e-child"))
            assert again.status_code == 201
            time.sleep(1.0)
            assert receiver.event_numbers(sub_id) == [1]
            with celery_worker(env, tmp_path / "beat-2", log):
                # at least once: if the worker died between event 1's POST and recording it, event 1
                # comes again (before 2: the order holds); the receiver skips numbers it has seen
                wait_until(lambda: 2 in receiver.event_numbers(sub_id), 120,
                           "the second notification after the worker restarted")
            assert list(dict.fromkeys(receiver.event_numbers(sub_id))) == [1, 2]
            last = [r for r in receiver.of("event-notification") if r.headers["X-SG-Subscription"] == sub_id][-1]
            assert verify(SECRET, last.raw, last.headers[HEADER])
            assert last.body["entry"][1]["resource"]["id"] == again.json()["id"]
    except BaseException:
        from sqlalchemy import select

        from fhir_server.storage.db import make_engine
        from fhir_server.storage.tables import outbox, subscription_state
        engine = make_engine(empty_database_url)
        with engine.connect() as conn:  # what the database held when the test failed
            print("subscription_state:", [dict(r._mapping) for r in conn.execute(select(subscription_state))])
            print("outbox pending:", conn.execute(select(outbox).where(outbox.c.processed_at.is_(None))).all())
        engine.dispose()
        log.flush()
        print(deployment.log_path.read_text()[-5000:])
        raise


def test_a_police_notification_for_a_child_on_a_plan_raises_a_flag_that_reaches_a_real_receiver(
        deployment: Deployment, receiver, tmp_path: Path) -> None:
    """Issue 6's chain with real processes: the local authority's child on a child protection plan;
    the police force's notification imported over HTTP; the Celery worker (through Redis) links the
    two records, rescores the child, fires ``domestic-abuse-on-plan`` and delivers the escalation
    Flag, signed, to the subscriber's receiver."""
    base, env, log = deployment.base, deployment.env, deployment.log

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        res = requests.post(f"{base}/{path}", headers=FHIR, json=body, timeout=30)
        assert res.status_code == 201, res.text
        return res.json()

    try:
        with serving(deployment.port, env), celery_worker(env, tmp_path / "beat", log):
            worker = post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Worker"}]})
            child = post("Patient", {"resourceType": "Patient", "meta": {"tag": [LA_TAG]},
                                     "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}],
                                     "name": [{"family": "Hughes", "given": ["Amelia"]}], "gender": "female",
                                     "birthDate": "2015-06-14"})
            post("EpisodeOfCare", {"resourceType": "EpisodeOfCare", "meta": {"tag": [LA_TAG]}, "status": "active",
                                   "type": [{"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/episode-type",
                                                         "code": "cp-plan"}]}],
                                   "patient": {"reference": f"Patient/{child['id']}"},
                                   "period": {"start": "2026-06-01"},
                                   "careManager": {"reference": f"Practitioner/{worker['id']}"}})
            sub_id = post("Subscription", subscription(receiver.url, content="full-resource"))["id"]
            wait_until(lambda: requests.get(f"{base}/Subscription/{sub_id}", timeout=30).json()["status"] == "active",
                       60, "the handshake of the escalation subscription")

            imported = requests.post(f"{base}/$import-agency-data", timeout=120,
                                     data={"format": "police-notifications-json"},
                                     files={"file": ("20_notifications.json", json.dumps(notification()).encode(),
                                                     "application/json")})
            assert imported.status_code == 200, imported.text

            def flags_with_trigger() -> list[Any]:
                return [n for n in receiver.of("event-notification") if n.headers["X-SG-Subscription"] == sub_id
                        and any(TRIGGER in causes(e.get("resource", {})) for e in n.body["entry"][1:])]

            wait_until(lambda: bool(flags_with_trigger()), 120, "the escalation Flag raised by the trigger")
            received = flags_with_trigger()[0]
            assert verify(SECRET, received.raw, received.headers[HEADER])
            sent = next(e["resource"] for e in received.body["entry"][1:] if TRIGGER in causes(e.get("resource", {})))
            assert sent["resourceType"] == "Flag" and sent["status"] == "active"
            master = requests.get(f"{base}/{sent['subject']['reference']}", headers=FHIR, timeout=30).json()
            assert f"Patient/{child['id']}" in {link["other"]["reference"] for link in master["link"]}
    except BaseException:
        log.flush()
        print(deployment.log_path.read_text()[-5000:])
        raise


class OwnRedis:
    """A ``redis-server`` of the test's own (the shared one must never be killed), without
    persistence: killed and started again, it comes back empty, every queued task lost."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil

        import redis

        if shutil.which("redis-server") is None:
            service_unavailable("redis-server is not installed")
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_until(lambda: _answers(client), 30, "redis-server to start")

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)
            self.proc = None


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


@contextmanager
def supervised_worker(env: dict[str, str], tmp_path: Path, log: Any) -> Iterator[list[int]]:
    """A Celery worker (with its beat) started again whenever it exits, as docker-compose's
    ``restart: unless-stopped`` or systemd's ``Restart=always`` would; yields the exit codes seen."""
    import threading

    exits: list[int] = []
    stop = threading.Event()

    def start() -> None:
        with celery_worker(env, tmp_path / f"beat-{len(exits)}", log) as proc:
            while not stop.is_set() and proc.poll() is None:
                time.sleep(0.2)
            if proc.poll() is not None and not stop.is_set():
                exits.append(proc.returncode)

    def supervise() -> None:
        while not stop.is_set():
            start()

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        yield exits
    finally:
        stop.set()
        thread.join(timeout=60)


def test_events_written_while_the_broker_is_down_are_all_delivered_in_order_once_it_is_back(
        deployment: Deployment, receiver, tmp_path: Path) -> None:
    """Issue 6: "if the broker … is down, nothing is lost". Redis is killed (SIGKILL) under a running
    server and worker; writes still succeed; Redis comes back empty (every queued task gone) and,
    with no further write, the worker reconnects, the beat's outbox sweep drains what was written,
    and the subscriber gets each change once, in order — a Flag's update after its create. The worker
    runs supervised, as deployed (docker-compose.yml): Celery may exit when its broker vanishes."""
    broker = OwnRedis(tmp_path / "redis.log")
    broker.start()
    env = {**deployment.env, "FHIR_BROKER_URL": broker.url, "FHIR_OUTBOX_SWEEP_SECONDS": "2"}
    base, log = deployment.base, deployment.log
    try:
        with serving(deployment.port, env), supervised_worker(env, tmp_path, log) as exits:
            created = requests.post(f"{base}/Subscription", headers=FHIR, timeout=30, json=subscription(
                receiver.url, filters=("Flag?patient=Patient/broker-child",), content="id-only"))
            assert created.status_code == 201, created.text
            sub_id = created.json()["id"]
            wait_until(lambda: requests.get(f"{base}/Subscription/{sub_id}", timeout=30).json()["status"] == "active",
                       60, "the handshake")
            first = requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json=flag("Patient/broker-child"))
            assert first.status_code == 201
            wait_until(lambda: receiver.event_numbers(sub_id) == [1], 60, "the first notification")

            broker.kill()
            during = requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json=flag("Patient/broker-child"))
            assert during.status_code == 201, during.text
            closed = requests.put(f"{base}/Flag/{during.json()['id']}", headers=FHIR, timeout=30,
                                  json={**during.json(), "status": "inactive"})
            assert closed.status_code == 200, closed.text
            other = requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json=flag("Patient/broker-child"))
            assert other.status_code == 201, other.text
            time.sleep(2.0)
            assert receiver.event_numbers(sub_id) == [1]  # nothing can reach the worker

            broker.start()  # empty; no write from now on
            wait_until(lambda: len(set(receiver.event_numbers(sub_id))) == 4, 180,
                       "the three changes written while the broker was down")
            assert list(dict.fromkeys(receiver.event_numbers(sub_id))) == [1, 2, 3, 4]
            focus = {}
            for received in receiver.of("event-notification"):
                if received.headers["X-SG-Subscription"] == sub_id:
                    assert verify(SECRET, received.raw, received.headers[HEADER])
                    for event in received.status()["notification-event"]:
                        focus.setdefault(int(event["event-number"]), event["focus"]["reference"].split("/fhir/")[1])
            print(f"worker exits while the broker was away: {exits}")
            assert focus == {1: f"Flag/{first.json()['id']}/_history/1",
                             2: f"Flag/{during.json()['id']}/_history/1",
                             3: f"Flag/{during.json()['id']}/_history/2",
                             4: f"Flag/{other.json()['id']}/_history/1"}
    except BaseException:
        log.flush()
        print(deployment.log_path.read_text()[-5000:])
        raise
    finally:
        broker.kill()
