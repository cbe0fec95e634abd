"""Fixtures for the subscription tests: an app that really commits (delivery runs after the
drain, on the local delivery thread), and a real HTTP receiver on a thread of the test process."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine

from fhir_server import create_app
from fhir_server.config import Settings
from subscriptions import runtime
from subscriptions.spec import FILTER_CRITERIA, HEARTBEAT_PERIOD, MAX_COUNT, PAYLOAD_CONTENT, SIGNING_SECRET

SECRET = "test-secret-0123456789abcdef"
ESCALATION = "https://w3id.org/sg-fhir/SubscriptionTopic/escalation-flag"
CHILD_DATA = "https://w3id.org/sg-fhir/SubscriptionTopic/child-agency-data"


@dataclass
class Received:
    headers: Any  # case-insensitive (email.message.Message)
    raw: bytes
    body: dict[str, Any] | None  # None: no body (a classic R4 ping)
    method: str = "POST"
    path: str = "/notify"

    def status(self) -> dict[str, Any]:
        """The status Parameters (first entry) as name → value (notification-event: list of parts)."""
        params = self.body["entry"][0]["resource"]["parameter"]
        out: dict[str, Any] = {"notification-event": []}
        for p in params:
            if p["name"] == "notification-event":
                out["notification-event"].append({q["name"]: next(v for k, v in q.items() if k.startswith("value"))
                                                  for q in p["part"]})
            else:
                out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
        return out

    @property
    def kind(self) -> str:
        """The notification type of a backport notification Bundle; "" for a classic R4 request."""
        if not self.body or self.body.get("resourceType") != "Bundle":
            return ""
        return self.status()["type"]

    def numbers(self) -> list[int]:
        return [int(e["event-number"]) for e in self.status()["notification-event"]]


@dataclass
class Receiver:
    """A subscriber's endpoint: records every POST; ``failing`` makes it answer 500."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, kind: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.kind == kind]

    def wait_for(self, check: Callable[["Receiver"], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                pass
            if check(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; received: {[(r.kind, r.numbers()) for r in self.received]}")

    def event_numbers(self, sub_id: str | None = None) -> list[int]:
        with self.lock:
            items = list(self.received)
        return [n for r in items if r.kind == "event-notification"
                and (sub_id is None or r.headers.get("X-SG-Subscription") == sub_id) for n in r.numbers()]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state.failing:
                self.send_response(500)
                self.end_headers()
                return
            with state.lock:
                state.received.append(Received(self.headers, raw, json.loads(raw) if raw else None,
                                               self.command, self.path))
            self.send_response(200)
            self.end_headers()

        do_PUT = do_POST  # a classic R4 Subscription with a payload PUTs the resource

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/notify"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def sub_app(engine: Engine, settings: Settings):
    """Like ``committing_app`` with a fast sweep and short backoff; stops its delivery thread after."""
    yield from _running(engine, settings)


@pytest.fixture
def auth_sub_app(engine: Engine, settings: Settings):
    """``sub_app`` with authentication on and the development issuer (tokens as in test_auth.py)."""
    yield from _running(engine, settings.with_overrides(auth_enabled=True, auth_dev_issuer=True))


def _running(engine: Engine, settings: Settings, **overrides: Any) -> Iterator[Any]:
    """The app on ``settings`` (by default with a fast sweep and short backoff: ``overrides`` replace
    them); afterwards its delivery thread and periodic jobs stop and the tables are emptied."""
    application = create_app(settings.with_overrides(
        **{"subscription_sweep_seconds": 0.5, "subscription_max_backoff": 1, **overrides}))
    yield application
    services = application.extensions["fhir"]
    runtime.uninstall(services.engine)
    from fhir_server.periodic import local_beat
    local_beat.cancel_owned(services.engine, wait=120)  # a sealing run under way would race the cleanup
    time.sleep(0.1)
    services.engine.dispose()
    from fhir_server.storage.db import empty_schema
    empty_schema(engine)


@pytest.fixture
def http(sub_app):
    return sub_app.test_client()


def subscription(endpoint: str, *, topic: str = ESCALATION, filters: tuple[str, ...] = (),
                 content: str = "id-only", secret: str | None = SECRET, headers: tuple[str, ...] = (),
                 heartbeat: int | None = None, max_count: int | None = None, status: str = "requested",
                 channel_type: str = "rest-hook") -> dict[str, Any]:
    """A backport-subscription resource as a client would POST it."""
    exts: list[dict[str, Any]] = []
    if secret is not None:
        exts.append({"url": SIGNING_SECRET, "valueString": secret})
    if heartbeat is not None:
        exts.append({"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat})
    if max_count is not None:
        exts.append({"url": MAX_COUNT, "valuePositiveInt": max_count})
    channel: dict[str, Any] = {"type": channel_type, "endpoint": endpoint, "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}}
    if headers:
        channel["header"] = list(headers)
    if exts:
        channel["extension"] = exts
    body: dict[str, Any] = {"resourceType": "Subscription", "status": status, "reason": "MASH triage",
                            "criteria": topic, "channel": channel}
    if filters:
        body["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]}
    return body


def flag(patient: str, *, band: str | None = None, author: str | None = None, status: str = "active") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Flag", "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "safety"}],
                      "text": "safeguarding"},
                     {"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/flag-category",
                                  "code": "safeguarding"}]}],
        "code": {"coding": [{"system": "https://w3id.org/sg-fhir/CodeSystem/safeguarding-flag",
                             "code": "escalation"}]},
        "subject": {"reference": patient},
    }
    if band:
        body["extension"] = [{"url": "https://w3id.org/sg-fhir/StructureDefinition/risk-band", "valueCode": band}]
    if author:
        body["author"] = {"reference": author}
    return body


def create(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/fhir/{body['resourceType']}", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def wait_status(client: Any, sub_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = client.get(f"/fhir/Subscription/{sub_id}").get_json()
        if current["status"] == status or time.monotonic() > deadline:
            assert current["status"] == status, current
            return current
        time.sleep(0.05)
