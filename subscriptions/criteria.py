"""Classic R4 Subscriptions: does a change match a Subscription's search criteria?

subscription.html (R4): "The criteria are Search strings that have the same interpretation as if they
were appended to the base URL and submitted using the REST API. Note that the search criteria are
applied to the new value of the resource. The consequence of this is that there is no notification
when a resource is deleted, or when a resource is updated so that it no longer meets the criteria."

So a created or updated resource matches when the server's own search, ``[type]?[criteria]&_id=[id]``,
returns it: every search parameter, modifier and chain the REST API supports works in criteria, with
the same meaning. The search sees the current version, so an event is matched only while its version
is still the current one; an older version already replaced when the drain reaches it is left to its
successor's own event (the outbox holds one for every version, in order), which is evaluated in turn.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from fhir_server.search.engine import find_matches
from fhir_server.storage.tables import resource
from fhir_server.worker import OutboxEvent

from .spec import SubscriptionSpec

INTERACTIONS = ("create", "update")  # no notification for a deletion (subscription.html)


def may_match(spec: SubscriptionSpec, res_type: str, interaction: str) -> bool:
    """Whether an event of this type and interaction can match ``spec`` at all (pure, no query)."""
    return spec.classic and interaction in INTERACTIONS and spec.criteria[0] == res_type


def matches(conn: Connection, registry: Any, spec: SubscriptionSpec, event: OutboxEvent,
            *, base_url: str | None = None, access: Any = None) -> bool:
    """True when the version ``event`` wrote is current and the criteria's search returns it;
    ``access`` (a policy Visibility) is the subscriber's: its search would not return a hidden one."""
    if not may_match(spec, event.res_type, event.event):
        return False
    current = conn.execute(select(resource.c.version_id, resource.c.deleted).where(
        resource.c.res_type == event.res_type, resource.c.res_id == event.res_id)).first()
    if current is None or current.deleted or current.version_id != event.version_id:
        return False
    res_type, params = spec.criteria
    found = find_matches(conn, registry, res_type, [*params, ("_id", event.res_id)], base_url=base_url,
                         access=access)
    return any(res_id == event.res_id for _pk, res_id in found)
