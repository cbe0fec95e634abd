"""The one place where what the single view collected is narrowed before it is shown.

Collection (:mod:`.record`, :mod:`.family_loader`) gathers everything; rendering (``$everything``'s
searchset, the family summary document) shows whatever it is given. Between the two, every resource
passes through one :data:`ResourceFilter`. Today that filter allows everything; access control and
consent (the governance issue) plug in here, deciding per resource from the RequestContext (agency,
role, purpose of use) and the resource's ``meta.security`` labels and source agency.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..repository.context import RequestContext

ResourceFilter = Callable[[dict[str, Any]], bool]
T = TypeVar("T")


def allow_all(_resource: dict[str, Any]) -> bool:
    return True


def filter_for(ctx: RequestContext) -> ResourceFilter:
    """The filter for one request. No policy is enforced yet: every resource is allowed."""
    del ctx  # the governance issue decides from the agency, role, purpose of use and security labels
    return allow_all


def keep(items: list[T], allow: ResourceFilter, content: Callable[[T], dict[str, Any]]) -> list[T]:
    """``items`` whose resource ``allow`` accepts, in order."""
    if allow is allow_all:
        return items
    return [item for item in items if allow(content(item))]
