"""Notification Bundles (Subscriptions R5 Backport IG STU 1.1, "Notifications" and profile
backport-subscription-notification-r4) and the status Parameters (backport-subscription-status-r4).
Pure: the caller passes the state, the events and the focus resources it read.

A notification is a ``history`` Bundle whose first entry is the status Parameters (subscription,
topic, status, type, events-since-subscription-start, one notification-event per event with its
event-number, timestamp and — unless the payload is ``empty`` — focus). With ``id-only`` each focus
follows as an entry with ``fullUrl`` and ``request`` only; with ``full-resource`` it carries the
resource version that raised the event.

A classic R4 Subscription's notification is no Bundle: :func:`classic_request`.
"""
from __future__ import annotations

import uuid
from typing import Any

from fhir_server.fhir import jsonio
from fhir_server.fhir.instants import format_instant, utcnow

from .spec import SubscriptionSpec
from .store import Event, State

NOTIFICATION_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"
STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
RESPONSE = {"create": "201", "update": "200", "delete": "204"}


def status_parameters(base_url: str, state: State, kind: str, events: list[Event], *,
                      content: str | None = None) -> dict[str, Any]:
    """The backport-subscription-status-r4 Parameters. ``kind``: handshake | heartbeat |
    event-notification | query-status | query-event."""
    content = content or state.spec.content
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{state.sub_id}"}},
        {"name": "topic", "valueCanonical": state.spec.topic},
        {"name": "status", "valueCode": state.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(state.event_count)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event.number)},
                                       {"name": "timestamp", "valueInstant": format_instant(event.created)}]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {
                "reference": f"{base_url}/{event.res_type}/{event.res_id}/_history/{event.version_id}"}})
        params.append({"name": "notification-event", "part": parts})
    if state.status == "error" and state.last_error:
        params.append({"name": "error", "valueCodeableConcept": {"text": state.last_error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": params}


def notification_bundle(base_url: str, state: State, kind: str, events: list[Event],
                        resources: dict[tuple[str, str, int], dict[str, Any]], *,
                        content: str | None = None) -> dict[str, Any]:
    """The ``history`` Bundle sent to the endpoint (or answered by ``$events``). ``resources``
    maps (type, id, version) to the version's content, for ``full-resource``."""
    content = content or state.spec.content
    status = status_parameters(base_url, state, kind, events, content=content)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status['id']}",
        "resource": status,
        "request": {"method": "GET", "url": f"Subscription/{state.sub_id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for event in events:
            entry: dict[str, Any] = {
                "fullUrl": f"{base_url}/{event.res_type}/{event.res_id}",
                "request": {"method": METHOD[event.interaction],
                            "url": event.res_type if event.interaction == "create"
                            else f"{event.res_type}/{event.res_id}"},
            }
            body = resources.get((event.res_type, event.res_id, event.version_id))
            if content == "full-resource" and body is not None:
                entry["resource"] = body
                entry["response"] = {"status": RESPONSE[event.interaction],
                                     "etag": f'W/"{event.version_id}"',
                                     "lastModified": format_instant(event.created)}
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"profile": [NOTIFICATION_PROFILE]},
            "type": "history", "timestamp": format_instant(utcnow()), "entry": entries}


def classic_request(spec: SubscriptionSpec, event: Event,
                    resources: dict[tuple[str, str, int], dict[str, Any]]) -> tuple[str, str, bytes]:
    """(method, URL, body) of a classic R4 rest-hook notification (subscription.html#2.46.7.1): with
    no ``channel.payload`` a POST with no body to the endpoint (a ping: the receiver runs the search
    itself); with a payload, the resource version that matched, sent as an update to the endpoint as
    a FHIR base: PUT ``[endpoint]/[type]/[id]``."""
    body = resources.get((event.res_type, event.res_id, event.version_id))
    if spec.content == "empty" or body is None:
        return "POST", spec.endpoint, b""
    url = f"{spec.endpoint.rstrip('/')}/{event.res_type}/{event.res_id}"
    return "PUT", url, jsonio.dumps(body).encode("utf-8")  # decimals exactly as stored
