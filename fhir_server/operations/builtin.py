"""The ``$operations`` this server implements, each paired with its OperationDefinition.

An operation is one module under ``fhir_server/operations/`` exposing ``DEFINITION_FILE`` (its
OperationDefinition in ``profiles/operations/``, which is also what ``GET [base]/OperationDefinition/[id]``
serves and what the CapabilityStatement names) and ``make_handler(settings)``. Adding one is a line in
:data:`OPERATION_MODULES`.
"""
from __future__ import annotations

import json
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .registry import OperationRegistry

if TYPE_CHECKING:
    from ..config import Settings
    from ..search.registry import SearchRegistry

OPERATIONS_DIR = "operations"
OPERATION_MODULES: tuple[str, ...] = ("validate", "everything", "family_summary")


def register_builtin_operations(settings: "Settings", registry: "SearchRegistry") -> OperationRegistry:
    """An :class:`OperationRegistry` holding every operation of :data:`OPERATION_MODULES`.

    Raises ``FileNotFoundError``/``ValueError`` when an operation's definition is missing or is not
    an OperationDefinition whose ``code`` the module implements (a start-up error, not a 500 later).
    """
    operations = OperationRegistry()
    for name in OPERATION_MODULES:
        module = import_module(f"{__package__}.{name}")
        definition = load_definition(settings, module.DEFINITION_FILE)
        operations.register(definition, module.make_handler(settings))
    return operations


def load_definition(settings: "Settings", filename: str) -> dict[str, Any]:
    path = settings.profiles_dir / OPERATIONS_DIR / filename
    definition = json.loads(path.read_text(encoding="utf-8"))
    if definition.get("resourceType") != "OperationDefinition" or not definition.get("code") \
            or not definition.get("url"):
        raise ValueError(f"{path}: not an OperationDefinition with a code and a url")
    return definition
