"""FHIRPath Patch (fhirpatch.html): a Parameters resource of ``operation`` parts
(add, insert, delete, replace, move) applied to a resource.

Paths are evaluated by a small FHIRPath subset that yields *locations* (not just values), which is
what a patch needs: element names (choice elements by their stem, e.g. ``Observation.value``),
indexers ``[n]``, ``first()``, ``last()`` and ``where(a = 'x' and b.c = 'y')`` with literal
comparisons. A path outside that subset is refused with a 422 naming it, never half-applied.
"""
from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from ..errors import Unprocessable
from ..fhir.models import element_is_list

_INDEXED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*('(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|true|false)\s*$")


@dataclass
class Location:
    """Where a value sits: ``parent[key]`` or, for a repeating element, ``parent[key][index]``."""

    parent: dict[str, Any]
    key: str
    index: int | None
    path: list[str]  # element names from the resource root, for cardinality look-ups

    def get(self) -> Any:
        value = self.parent[self.key]
        return value if self.index is None else value[self.index]

    def set(self, value: Any) -> None:
        if self.index is None:
            self.parent[self.key] = value
        else:
            self.parent[self.key][self.index] = value


def apply_fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """Apply every operation in order to a copy of ``resource`` (fhirpatch.html#semantics)."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise Unprocessable("A FHIRPath Patch is a Parameters resource", expression="Parameters")
    patched = deepcopy(resource)
    for number, param in enumerate(parameters.get("parameter") or []):
        where = f"Parameters.parameter[{number}]"
        if param.get("name") != "operation":
            raise Unprocessable("Every parameter of a FHIRPath Patch must be named 'operation'", expression=where)
        parts = {p.get("name"): p for p in param.get("part") or []}
        op = _primitive(parts.get("type"))
        path = _primitive(parts.get("path"))
        if not isinstance(op, str) or not isinstance(path, str):
            raise Unprocessable("An operation needs a type and a path", expression=where)
        try:
            _apply(patched, op, path, parts)
        except Unprocessable as exc:
            raise Unprocessable(f"{where} ({op} {path}): {exc.diagnostics}", expression=where) from None
    return patched


def _apply(resource: dict[str, Any], op: str, path: str, parts: dict[str, Any]) -> None:
    targets = evaluate(resource, path, allow_root=op == "add")
    if op == "delete":
        if len(targets) > 1:
            raise Unprocessable("delete matched more than one element")
        for target in targets:
            _remove(target)
        return
    if op in ("insert", "move"):
        _reorder(op, _collection(targets), parts)
        return
    if len(targets) != 1:
        raise Unprocessable(f"the path matched {len(targets)} elements; exactly one is required")
    target = targets[0]
    if op == "replace":
        target.set(_value(parts))
    elif op == "add":
        name = _primitive(parts.get("name"))
        container = target.get()
        if not isinstance(name, str) or not isinstance(container, dict):
            raise Unprocessable("add needs a name and a path to an element that can hold it")
        value = _value(parts)
        existing = container.get(name)
        if isinstance(existing, list):
            existing.append(value)
        elif existing is not None:
            raise Unprocessable(f"{name} already has a value; use replace")
        else:
            repeats = element_is_list(resource["resourceType"], [*target.path, name])
            container[name] = [value] if repeats else value
    else:
        raise Unprocessable(f"Unknown operation type {op!r}")


def _collection(targets: list[Location]) -> list[Any]:
    """insert and move name a repeating element: its items all sit in one list."""
    lists = {id(t.parent[t.key]): t.parent[t.key] for t in targets if t.index is not None}
    if len(lists) != 1 or len(lists) == 1 and any(t.index is None for t in targets):
        raise Unprocessable("insert and move need a path to one repeating element that has items")
    return next(iter(lists.values()))


def _reorder(op: str, collection: list[Any], parts: dict[str, Any]) -> None:
    if op == "insert":
        collection.insert(_int_part(parts, "index", 0, len(collection)), _value(parts))
    else:
        source = _int_part(parts, "source", 0, len(collection) - 1)
        destination = _int_part(parts, "destination", 0, len(collection) - 1)
        collection.insert(destination, collection.pop(source))


def evaluate(resource: dict[str, Any], path: str, *, allow_root: bool = False) -> list[Location]:
    """Locations matched by ``path`` in ``resource`` (the FHIRPath subset described above)."""
    steps = _split(path)
    if not steps or steps[0] != resource.get("resourceType"):
        raise Unprocessable(f"The path must start with {resource.get('resourceType')}")
    root = Location({"": resource}, "", None, [])
    current = [root]
    for step in steps[1:]:
        current = _step(current, step)
    if current and current[0] is root and not allow_root:
        raise Unprocessable("The path must name an element, not the whole resource")
    return current


def _step(current: list[Location], step: str) -> list[Location]:
    if step == "first()":
        return current[:1]
    if step == "last()":
        return current[-1:]
    if step.startswith("where(") and step.endswith(")"):
        conditions = [_condition(c) for c in re.split(r"\s+and\s+", step[6:-1])]
        return [loc for loc in current if all(_matches(loc.get(), f, v) for f, v in conditions)]
    indexed = _INDEXED.match(step)
    name, wanted = (indexed.group(1), int(indexed.group(2))) if indexed else (step, None)
    if not _NAME.match(name):
        raise Unprocessable(f"Unsupported FHIRPath in a patch: {step!r}")
    found: list[Location] = []
    for loc in current:
        node = loc.get()
        if not isinstance(node, dict):
            continue
        key = name if name in node else _choice_key(node, name)
        if key is None:
            continue
        value = node[key]
        if isinstance(value, list):
            found += [Location(node, key, i, [*loc.path, key]) for i in range(len(value))]
        else:
            found.append(Location(node, key, None, [*loc.path, key]))
    if wanted is not None:
        return found[wanted:wanted + 1]
    return found


def _choice_key(node: dict[str, Any], stem: str) -> str | None:
    for key in node:
        if key.startswith(stem) and len(key) > len(stem) and key[len(stem)].isupper():
            return key
    return None


def _condition(text: str) -> tuple[list[str], Any]:
    match = _CONDITION.match(text)
    if not match:
        raise Unprocessable(f"Unsupported where() condition in a patch: {text!r}")
    literal = match.group(2)
    if literal.startswith("'"):
        value: Any = literal[1:-1].replace("\\'", "'")
    elif literal in ("true", "false"):
        value = literal == "true"
    else:
        value = literal
    return match.group(1).split("."), value


def _matches(node: Any, fields: list[str], expected: Any) -> bool:
    values = [node]
    for name in fields:
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, dict) and name in v:
                item = v[name]
                nxt += item if isinstance(item, list) else [item]
        values = nxt
    return any(str(v) == str(expected) if not isinstance(expected, bool) else v is expected for v in values)


def _remove(target: Location) -> None:
    if target.index is None:
        del target.parent[target.key]
        return
    items = target.parent[target.key]
    del items[target.index]
    if not items:
        del target.parent[target.key]


def _split(path: str) -> list[str]:
    steps, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(path):
        if ch == "'" and (i == 0 or path[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ".":
            steps.append(path[start:i].strip())
            start = i + 1
    steps.append(path[start:].strip())
    return [s for s in steps if s]


def _primitive(part: Any) -> Any:
    if not isinstance(part, dict):
        return None
    for key, value in part.items():
        if key.startswith("value"):
            return value
    return None


def _value(parts: dict[str, Any]) -> Any:
    """The ``value`` part: a ``value[x]``, or nested parts for an anonymous (backbone) type."""
    part = parts.get("value")
    if not isinstance(part, dict):
        raise Unprocessable("The operation needs a value")
    for key, value in part.items():
        if key.startswith("value"):
            return deepcopy(value)
    if part.get("part"):
        out: dict[str, Any] = {}
        for sub in part["part"]:
            name = sub.get("name")
            value = _value({"value": sub})
            if name in out:
                out[name] = out[name] + [value] if isinstance(out[name], list) else [out[name], value]
            else:
                out[name] = value
        return out
    raise Unprocessable("The value part carries no value")


def _int_part(parts: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _primitive(parts.get(name))
    if not isinstance(value, int) or not low <= value <= high:
        raise Unprocessable(f"{name} must be an integer from {low} to {high}")
    return value
