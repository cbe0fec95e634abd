"""Required-binding enforcement (terminologies.html#required): a ``code`` bound with strength
required must come from its value set. The models do not check this, so we do.

The table of (element path → allowed codes) is generated into profiles/r4/required-bindings.json
by scripts/import_r4_definitions.py. Its paths are *definition* paths: ``Patient.contact.gender``,
``HumanName.use`` (a datatype's binding, wherever a HumanName occurs), ``Questionnaire.item.type``
(also for ``Questionnaire.item.item``, which is a contentReference to ``Questionnaire.item``).

To know which JSON elements lead to a bound code (``Patient.name`` is a HumanName) we need the element
types; the R4B models carry them (R4B's fields are R4's for every supported type, see models.py). From
them we compile, once per class, a small tree holding only the edges that can reach a bound code, so the
check on each write walks just those parts of the resource.
"""
from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import Issue
from .models import _model  # the R4B model classes (fhir.resources is imported only there)

MAX_LISTED_CODES = 12


@dataclass
class _Edge:
    """How one JSON key of a complex element is checked."""

    path: str  # the definition path of the element, for messages
    codes: frozenset[str] | None = None  # a code with a required binding
    child: "dict[str, _Edge] | None" = None  # a complex element: its own edges
    resource: bool = False  # an element of type Resource (contained, Bundle.entry.resource, …)


Node = dict[str, _Edge]


def check_required_bindings(content: dict[str, Any]) -> list[Issue]:
    """Every code element bound ``required`` in ``content`` (incl. nested backbone elements, datatypes,
    contained and other inline resources) holds a code of its value set; one ``code-invalid`` issue
    per offending value, ``expression`` naming it (``Patient.contact[0].gender``)."""
    issues: list[Issue] = []
    res_type = content.get("resourceType")
    if isinstance(res_type, str):
        node = _resource_node(res_type)
        if node is not None:
            _walk(content, node, res_type, issues)
    return issues


def _walk(value: dict[str, Any], node: Node, path: str, issues: list[Issue]) -> None:
    for key, item in value.items():
        edge = node.get(key)
        if edge is None:
            continue
        if isinstance(item, list):
            for i, one in enumerate(item):
                _check(one, edge, f"{path}.{key}[{i}]", issues)
        else:
            _check(item, edge, f"{path}.{key}", issues)


def _check(item: Any, edge: _Edge, where: str, issues: list[Issue]) -> None:
    if edge.codes is not None:
        if isinstance(item, str) and item not in edge.codes:
            issues.append(Issue("error", "code-invalid", _message(item, edge), (where,)))
    elif not isinstance(item, dict):
        return  # a wrong shape is a structural error, reported by the model validation
    elif edge.resource:
        inner = item.get("resourceType")
        node = _resource_node(inner) if isinstance(inner, str) else None
        if node is not None:
            _walk(item, node, where, issues)
    elif edge.child is not None:
        _walk(item, edge.child, where, issues)


def _message(code: str, edge: _Edge) -> str:
    allowed = sorted(edge.codes or ())
    shown = ", ".join(allowed[:MAX_LISTED_CODES]) + (", …" if len(allowed) > MAX_LISTED_CODES else "")
    return f"Code '{code}' is not in the required value set of {edge.path} (allowed: {shown})"


# -- the table -------------------------------------------------------------------------------------

def table_path() -> Path:
    from ..config import Settings
    return Settings.from_env().profiles_dir / "r4" / "required-bindings.json"


@lru_cache(maxsize=1)
def _table() -> dict[str, frozenset[str]]:
    """definition path → allowed codes, from every type's section of the generated file."""
    path = table_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuntimeError(f"{path} is missing: run scripts/import_r4_definitions.py; without it "
                           "required bindings cannot be enforced") from None
    table: dict[str, frozenset[str]] = {}
    for owner, section in raw.items():
        if owner.startswith("_") or not isinstance(section, dict):
            continue  # _source, _skipped
        for element, codes in section.items():
            table[element] = frozenset(codes)
    return table


def reset_cache() -> None:
    """Forget the table and compiled trees (tests that point FHIR_PROFILES_DIR elsewhere)."""
    _table.cache_clear()
    _resource_node.cache_clear()
    _COMPILED.clear()


# -- compiling the model classes into trees ----------------------------------------------------------

_COMPILED: dict[type, Node] = {}


@lru_cache(maxsize=None)
def _resource_node(res_type: str) -> Node | None:
    try:
        cls = _model(res_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    return _Compiler(_table()).node(cls)


class _Compiler:
    """Turns a model class into a :data:`Node`, sharing nodes by class (recursion via
    contentReference, e.g. ``Questionnaire.item.item``, and datatype cycles such as
    Identifier → Reference → Identifier) and pruning edges that cannot reach a bound code."""

    def __init__(self, table: dict[str, frozenset[str]]) -> None:
        self.table = table
        self.paths: dict[type, str] = {}
        self.pending: dict[type, Node] = {}
        self.links: dict[type, list[tuple[str, type]]] = {}  # class → (key, child class) edges

    def node(self, cls: type) -> Node:
        if cls not in _COMPILED:
            self._discover(cls)
            self._build()
        return _COMPILED[cls]

    def _discover(self, root: type) -> None:
        """Find every class reachable from ``root`` and each backbone class's definition path."""
        stack = [root]
        seen = {root}
        defining: dict[type, tuple[type, str]] = {}
        while stack:
            cls = stack.pop()
            if cls in _COMPILED:
                continue
            edges = []
            for key, child in _complex_fields(cls):
                edges.append((key, child))
                if child is not None and _is_backbone(child) and child.__name__ == cls.__name__ + key[0].upper() + key[1:]:
                    defining[child] = (cls, key)  # QuestionnaireItem is defined at Questionnaire.item
                if child is not None and child is not _RESOURCE and child not in seen:
                    seen.add(child)
                    stack.append(child)
            self.links[cls] = edges
        for cls in self.links:
            self.paths[cls] = self._path(cls, defining)

    def _path(self, cls: type, defining: dict[type, tuple[type, str]]) -> str:
        if not _is_backbone(cls) or cls not in defining:
            return cls.__name__
        parent, key = defining[cls]
        return f"{self._path(parent, defining)}.{key}"

    def _build(self) -> None:
        for cls in self.links:
            self.pending[cls] = {}
        for cls, edges in self.links.items():
            node = self.pending[cls]
            for key, child in edges:
                path = f"{self.paths[cls]}.{key}"
                if child is None:
                    codes = self.table.get(path)
                    if codes is not None:
                        node[key] = _Edge(path, codes=codes)
                elif child is _RESOURCE:
                    node[key] = _Edge(path, resource=True)
                else:
                    node[key] = _Edge(path, child=_COMPILED.get(child, self.pending.get(child)))
        live = self._live()
        for cls, node in self.pending.items():
            for key in [k for k, e in node.items() if e.child is not None and not live.get(id(e.child), False)]:
                del node[key]
            _COMPILED[cls] = node

    def _live(self) -> dict[int, bool]:
        """Nodes that can reach a bound code or an inline resource (fixpoint over cycles)."""
        live = {id(n): bool(n) for n in _COMPILED.values()}  # compiled nodes are pruned: non-empty = live
        for node in self.pending.values():
            live[id(node)] = any(e.codes is not None or e.resource for e in node.values())
        changed = True
        while changed:
            changed = False
            for node in self.pending.values():
                if not live[id(node)] and any(e.child is not None and live.get(id(e.child), False)
                                              for e in node.values()):
                    live[id(node)] = changed = True
        return live


class _ResourceMarker:
    """Stands for an element of type Resource in :func:`_complex_fields`."""


_RESOURCE: Any = _ResourceMarker


def _complex_fields(cls: type) -> list[tuple[str, Any]]:
    """(JSON key, child class | _RESOURCE | None for primitives) for each element of ``cls``."""
    out: list[tuple[str, Any]] = []
    for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
        key = info.alias or name
        if name == "fhir_comments" or key.startswith("_"):
            continue  # primitive extensions (_gender) carry no codes
        out.append((key, _element_class(info.annotation)))
    return out


def _element_class(annotation: Any) -> Any:
    """The model class inside ``Optional[List[abc.XType]]``; None for a primitive."""
    stack = [annotation]
    while stack:
        ann = stack.pop()
        getter = getattr(ann, "get_model_klass", None)
        if getter is not None:
            klass = getter()
            if klass.__name__ in ("Resource", "DomainResource"):
                return _RESOURCE
            return klass
        stack.extend(typing.get_args(ann))
    return None


def _is_backbone(cls: type) -> bool:
    """A backbone element class lives in its owner's module (``patient.PatientContact``); a
    resource or datatype lives in a module of its own name (``humanname.HumanName``)."""
    return cls.__module__.rsplit(".", 1)[-1] != cls.__name__.lower()
