"""Reference rewriting inside transaction Bundles (http.html#trules, references.html#bundle).

Pure functions: no database, no Flask. ``bundles.py`` (and the agency importer's batched writer)
decide what each placeholder resolves to and give the database search a conditional reference needs;
this module resolves conditional references and rewrites references in a resource in place.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from urllib.parse import parse_qsl

from ..errors import BadRequest, FhirError, PreconditionFailed
from ..fhir.models import SUPPORTED_TYPES

PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")

# Elements whose value looks like a URL but must not be rewritten: ``id`` is never a link, and
# elements of type canonical are excluded by http.html#trules ("Elements of type canonical are not
# replaced"). Without the type information of every element, these names cover the canonicals that
# occur in instance data.
_NOT_LINKS = frozenset({"id", "profile", "instantiatesCanonical", "valueCanonical", "valueSet", "targetProfile"})

_CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]{0,63})\?(.+)$")
_NARRATIVE_LINK = re.compile(r'\b(href|src)(\s*=\s*)"([^"]*)"')

# Resolves ``Patient?identifier=x|y`` to ``Patient/123``; the second argument names the element
# (FHIRPath) for error messages.
ConditionalResolver = Callable[[str, str], str]


def is_placeholder(url: str | None) -> bool:
    """A bundle-local identity (``urn:uuid:…``, ``urn:oid:…``) that the server must replace."""
    return isinstance(url, str) and url.startswith(PLACEHOLDER_PREFIXES)


def conditional_reference(value: str) -> tuple[str, str] | None:
    """``Patient?identifier=sys|val`` → ``("Patient", "identifier=sys|val")``, else None
    (http.html#trules, "Conditional References")."""
    match = _CONDITIONAL.match(value)
    return (match.group(1), match.group(2)) if match else None


def resolve_conditional_reference(value: str, where: str,
                                  find: Callable[[str, list[tuple[str, str]]], list[str]],
                                  pending: Mapping[tuple[str, frozenset[tuple[str, str]]], str]) -> str:
    """A conditional reference ``Type?params`` → ``Type/id`` of its one match (http.html#trules):
    ``find`` searches the database; ``pending`` holds the ids of this transaction's conditional
    creates by (type, criteria), which match when the database has nothing. 400 for no match or a
    bad search, 412 for several (the element ``where`` named)."""
    res_type, query = cast(tuple[str, str], conditional_reference(value))
    if res_type not in SUPPORTED_TYPES:
        raise BadRequest(f"Conditional reference {value!r} names an unknown resource type", expression=where)
    criteria = parse_qsl(query, keep_blank_values=True)
    try:
        ids = find(res_type, criteria)
    except FhirError as exc:
        raise BadRequest(f"Conditional reference {value!r}: {exc.diagnostics}", expression=where) from None
    if not ids:
        created = pending.get((res_type, frozenset(criteria)))
        ids = [created] if created else []
    if not ids:
        raise BadRequest(f"Conditional reference {value!r} matches no resource", expression=where)
    if len(ids) > 1:
        raise PreconditionFailed(f"Conditional reference {value!r} matches {len(ids)} resources", expression=where)
    return f"{res_type}/{ids[0]}"


def rewrite_references(resource: dict[str, Any], local: Mapping[str, str], *, where: str,
                       conditional: ConditionalResolver | None = None,
                       reject_unresolved: bool = False) -> int:
    """Rewrite, in place, every link in ``resource`` (contained resources and extensions included).

    - any string element (Reference.reference, uri, url, oid, uuid …) whose whole value is a key of
      ``local`` (an entry's fullUrl) becomes ``local[value]`` (``Type/id``);
    - ``href``/``src`` attributes of the narrative that name a fullUrl likewise;
    - ``Reference.reference`` of the form ``Type?params`` is passed to ``conditional``;
    - with ``reject_unresolved``, a ``Reference.reference`` that is still a ``urn:uuid:``/``urn:oid:``
      placeholder is a 400: in a transaction it can only mean an entry that is not in the Bundle.

    ``where`` is the FHIRPath of the resource (``Bundle.entry[3].resource``) for error messages.
    Returns the number of values rewritten. Nothing is copied: the walk mutates ``resource``.
    """
    changed = 0
    # Each frame: (container, path-chain). The chain is a linked tuple, unwound only on error.
    stack: list[tuple[Any, Any]] = [(resource, None)]
    while stack:
        node, chain = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, str):
                # Most strings are neither a fullUrl nor a reference nor narrative: skip them cheaply.
                if value in local or key == "reference" or key == "div":
                    new = _rewrite_value(key, value, node, local, chain, where, conditional, reject_unresolved)
                    if new is not None and new != value:
                        node[key] = new
                        changed += 1
            elif isinstance(value, (dict, list)):
                stack.append((value, (chain, key)))
    return changed


def _rewrite_value(key: Any, value: str, node: Any, local: Mapping[str, str], chain: Any, where: str,
                   conditional: ConditionalResolver | None, reject_unresolved: bool) -> str | None:
    # In a list (e.g. ``given``, ``instantiatesUri``) the element name is the list's own key.
    name = key if isinstance(key, str) else (chain[1] if chain else None)
    if name in _NOT_LINKS:
        return None
    target = local.get(value)
    if target is not None:
        return target
    if name == "reference" and isinstance(node, dict):
        if conditional is not None and "?" in value:
            parsed = conditional_reference(value)
            if parsed is not None:
                return conditional(value, element_path(where, chain, key))
        if reject_unresolved and is_placeholder(value):
            raise BadRequest(f"{value} is not the fullUrl of any entry in this transaction",
                             expression=element_path(where, chain, key))
        return None
    if name == "div" and local and ("href" in value or "src" in value):
        return _NARRATIVE_LINK.sub(lambda m: f'{m.group(1)}{m.group(2)}"{local.get(m.group(3), m.group(3))}"',
                                   value)
    return None


def element_path(where: str, chain: Any, key: Any) -> str:
    """FHIRPath of one element from the walk's linked chain: ``…resource.subject.reference``."""
    parts: list[Any] = [key]
    while chain is not None:
        chain, step = chain
        parts.append(step)
    path = where
    for step in reversed(parts):
        path += f"[{step}]" if isinstance(step, int) else f".{step}"
    return path
