"""``Subscription/$status`` and ``Subscription/[id]/$events`` (Subscriptions R5 Backport IG STU 1.1,
OperationDefinition-backport-subscription-status and -events; ours: profiles/operations/
subscription-status.json and subscription-events.json).

- ``$status``: a ``searchset`` Bundle with one backport-subscription-status-r4 Parameters (type
  ``query-status``) per Subscription: the instance's, or at type level those named by ``id`` and/or
  having a ``status``.
- ``$events``: a ``history`` notification Bundle (type ``query-event``) of the stored events numbered
  ``eventsSinceNumber``..``eventsUntilNumber`` (default: the last :data:`DEFAULT_EVENTS`), with the
  subscription's payload content or the one asked (``content``): how a subscriber catches up on
  what it missed, by event number, whatever delivery managed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fhir_server.errors import BadRequest, NotFound
from fhir_server.operations.registry import OperationTarget
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.storage.tables import subscription_state

from . import store
from .notifications import notification_bundle, status_parameters
from .spec import PAYLOAD_CONTENTS

if TYPE_CHECKING:
    from fhir_server import Services
    from fhir_server.repository.sql import UnitOfWork

DEFINITIONS = {"status": "subscription-status.json", "events": "subscription-events.json"}
DEFAULT_EVENTS = 100
MAX_EVENTS = 1000


def register_operations(services: "Services") -> None:
    base = services.settings.base_url
    handlers = {"status": _status_handler(base), "events": _events_handler(base)}
    for code, filename in DEFINITIONS.items():
        path = Path(services.settings.profiles_dir) / "operations" / filename
        services.router.operations.register(json.loads(path.read_text(encoding="utf-8")), handlers[code])


def _inputs(req: FhirRequest, allowed: set[str]) -> dict[str, list[str]]:
    """Operation inputs from the query string and a Parameters body (operations.html#request)."""
    values: dict[str, list[str]] = {}
    for name, value in req.query:
        if name in ("_format", "_pretty"):
            continue
        values.setdefault(name, []).extend(v for v in value.split(",") if v)
    body = req.body
    if isinstance(body, dict):
        if body.get("resourceType") != "Parameters":
            raise BadRequest("The body of this operation must be a Parameters resource", expression="resourceType")
        for p in body.get("parameter", []) or []:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if value is not None:
                values.setdefault(str(p.get("name")), []).append(str(value))
    unknown = set(values) - allowed
    if unknown:
        raise BadRequest(f"Unknown parameter(s) {', '.join(sorted(unknown))}", expression=sorted(unknown)[0])
    return values


def _state(uow: "UnitOfWork", sub_id: str) -> store.State:
    uow.read("Subscription", sub_id)  # 404 unknown or not the caller's to read, 410 deleted
    state = store.get(uow.conn, sub_id)
    if state is None:
        raise NotFound(f"Subscription/{sub_id} has no delivery state", expression="id")
    return state


def _status_handler(base_url: str):
    def handle(uow: "UnitOfWork", req: FhirRequest, target: OperationTarget) -> FhirResponse:
        asked = _inputs(req, {"id", "status"})
        if target.level == "instance":
            assert target.res_id is not None
            states = [_state(uow, target.res_id)]
        else:
            query = select(subscription_state.c.sub_id).order_by(subscription_state.c.sub_id)
            if "id" in asked:
                query = query.where(subscription_state.c.sub_id.in_(asked["id"]))
            if "status" in asked:
                query = query.where(subscription_state.c.status.in_(asked["status"]))
            ids = list(uow.conn.execute(query).scalars())
            if uow.access is not None:  # only the Subscriptions the caller may read (auth/policy.OWNER_ONLY_TYPES)
                seen = uow.access.visible(uow.conn, (("Subscription", i) for i in ids))
                ids = [i for i in ids if ("Subscription", i) in seen]
            states = [s for s in (store.get(uow.conn, i) for i in ids) if s]
        entries = [{"fullUrl": f"urn:uuid:{p['id']}", "resource": p, "search": {"mode": "match"}}
                   for p in (status_parameters(base_url, s, "query-status", []) for s in states)]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries)}
        if entries:
            bundle["entry"] = entries
        return FhirResponse(200, bundle)

    return handle


def _events_handler(base_url: str):
    def handle(uow: "UnitOfWork", req: FhirRequest, target: OperationTarget) -> FhirResponse:
        asked = _inputs(req, {"eventsSinceNumber", "eventsUntilNumber", "content"})
        assert target.res_id is not None
        state = _state(uow, target.res_id)
        since = _number(asked, "eventsSinceNumber")
        until = _number(asked, "eventsUntilNumber")
        if since is None:
            since = max(1, (until or state.event_count) - DEFAULT_EVENTS + 1)
        if until is not None and until < since:
            raise BadRequest("eventsUntilNumber is before eventsSinceNumber", expression="eventsUntilNumber")
        content = (asked.get("content") or [state.spec.content])[-1]
        if content not in PAYLOAD_CONTENTS:
            raise BadRequest(f"content must be one of {', '.join(PAYLOAD_CONTENTS)}", expression="content")
        events = store.events(uow.conn, state.sub_id, after=since - 1, until=until, limit=MAX_EVENTS)
        resources = store.versions(uow.conn, events) if content == "full-resource" else {}
        return FhirResponse(200, notification_bundle(base_url, state, "query-event", events, resources,
                                                     content=content))

    return handle


def _number(asked: dict[str, list[str]], name: str) -> int | None:
    values = asked.get(name)
    if not values:
        return None
    if not values[-1].isdigit() or int(values[-1]) < 1:
        raise BadRequest(f"{name} must be a positive event number", expression=name)
    return int(values[-1])
