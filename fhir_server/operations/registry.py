"""The registry later features plug their ``$operations`` into (operations.html).

Each operation declares its OperationDefinition (served at ``OperationDefinition/[id]`` and listed
in the CapabilityStatement) and the levels it runs at; the router finds it by name and level.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MethodNotAllowed, NotFound

if TYPE_CHECKING:
    from ..repository.sql import UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse


@dataclass(frozen=True)
class OperationTarget:
    level: str  # system | type | instance
    res_type: str | None = None
    res_id: str | None = None


Handler = Callable[["UnitOfWork", "FhirRequest", OperationTarget], "FhirResponse"]


@dataclass(frozen=True)
class Operation:
    definition: dict[str, Any]
    handler: Handler
    # True for operations that open their own transactions (long imports, async kick-offs): the
    # router then calls the handler with no unit of work instead of wrapping it in one.
    own_transaction: bool = False

    @property
    def name(self) -> str:
        return str(self.definition["code"])

    @property
    def affects_state(self) -> bool:
        return bool(self.definition.get("affectsState", False))

    def runs_at(self, target: OperationTarget) -> bool:
        d = self.definition
        if target.level == "system":
            return bool(d.get("system"))
        allowed = d.get("resource") or []
        if allowed and "Resource" not in allowed and target.res_type not in allowed:
            return False
        return bool(d.get("type") if target.level == "type" else d.get("instance"))


class OperationRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, list[Operation]] = {}

    def register(self, definition: dict[str, Any], handler: Handler, *, own_transaction: bool = False) -> None:
        op = Operation(definition, handler, own_transaction)
        self._by_name.setdefault(op.name, []).append(op)

    def find(self, name: str, target: OperationTarget, method: str) -> Operation:
        candidates = self._by_name.get(name)
        if not candidates:
            raise NotFound(f"Unknown operation ${name}", expression="operation")
        for op in candidates:
            if op.runs_at(target):
                if method == "GET" and op.affects_state:
                    raise MethodNotAllowed(f"${name} changes data and must be invoked with POST")
                return op
        where = target.res_type or "system"
        raise NotFound(f"${name} is not available at {target.level} level for {where}", expression="operation")

    def all(self) -> list[Operation]:
        return [op for ops in self._by_name.values() for op in ops]
