"""Primitive extensions on an Extension's own value (``"_valueString": {"extension": […]}``).

json.html#primitive: a primitive element's id and extensions are carried by a sibling property named
``_`` + the element's name, and that holds for Extension.value[x] like any other primitive element
(the R4 examples do it: Bundle-v2-valuesets.json). The fhir.resources R4B Extension model has no field
for them and refuses the resource, so :func:`split` takes them out before the model sees the rest and
hands them back for checking on their own (fhir/validation.py). Pure: no model, no database.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# datatypes.html#primitive: the R4 primitive types, all of them among Extension.value[x]'s types
# (extensibility.html#Extension).
PRIMITIVE_TYPES: frozenset[str] = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant", "integer",
    "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid"})
PRIMITIVE_VALUE_NAMES: frozenset[str] = frozenset("value" + t[0].upper() + t[1:] for t in PRIMITIVE_TYPES)
EXTENSION_KEYS = ("extension", "modifierExtension")


@dataclass(frozen=True)
class ValuePrimitive:
    """One ``_value[x]`` taken out of an Extension. ``path``: the Extension's location as model
    validation reports it (keys and list positions below the resource); ``name``: ``valueString``…;
    ``element``: what the ``_`` property held (its own ``_value[x]`` taken out in turn); ``values``: the
    Extension's ``value[x]`` property names, to check that value[x] has one type."""

    path: tuple[str | int, ...]
    name: str
    element: Any
    values: tuple[str, ...]


def split(content: Any) -> tuple[Any, list[ValuePrimitive]]:
    """``content`` without the ``_value[x]`` properties of its Extensions (at any depth: resource,
    datatype, primitive-extension, contained or inline resource), and those properties. ``content``
    itself is not changed; the parts without any come back as the same objects."""
    found: list[ValuePrimitive] = []
    return _strip(content, (), False, found), found


def _strip(node: Any, path: tuple[str | int, ...], is_extension: bool, found: list[ValuePrimitive]) -> Any:
    if isinstance(node, list):
        items = [_strip(item, (*path, i), is_extension, found) for i, item in enumerate(node)]
        return node if all(a is b for a, b in zip(items, node)) else items
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    changed = False
    for key, value in node.items():
        if is_extension and key.startswith("_value"):
            values = tuple(k for k in node if k.startswith("value"))
            element = _strip(value, (*path, key), False, found)
            found.append(ValuePrimitive(path, key[1:], element, values))
            changed = True
            continue
        stripped = _strip(value, (*path, key), key in EXTENSION_KEYS, found)
        changed = changed or stripped is not value
        out[key] = stripped
    return out if changed else node


def value_problem(primitive: ValuePrimitive) -> str | None:
    """Why a ``_value[x]`` is not allowed where it is, or None: its name must be that of a primitive
    choice of Extension.value[x] (datatypes.html#primitive), and the Extension may hold no value of
    another type (value[x] is 0..1)."""
    if primitive.name not in PRIMITIVE_VALUE_NAMES:
        return f"Unknown element: '_{primitive.name}' is not the extension of a primitive Extension.value[x]"
    others = [v for v in primitive.values if v != primitive.name]
    if others:
        return f"Extension.value[x] has one type: '_{primitive.name}' beside {', '.join(others)}"
    return None
