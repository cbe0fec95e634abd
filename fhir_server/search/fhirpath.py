"""The FHIRPath subset of the R4 SearchParameter expressions: parser and R4 type model
(fhirpath.html; the element types come from the R4 model bundled with fhirpathpy).

:func:`parse` turns an expression into a small AST of :class:`Node` (raising :class:`Unsupported`
for anything outside the subset: arithmetic, ordering comparisons, most functions);
:func:`child_types` says which JSON keys and FHIR types an element can appear as, so choice
elements (``Observation.effective``) resolve to ``effectiveDateTime``, ``effectivePeriod`` … at
compile time. ``search.extract`` compiles the AST into extractors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirpathpy.models import models as _fhirpath_models

MODEL = _fhirpath_models["r4"]
_PATH_TYPE: dict[str, str] = MODEL["path2Type"]
_CHOICES: dict[str, list[str]] = MODEL["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = MODEL["pathsDefinedElsewhere"]
_PARENT: dict[str, str] = MODEL["type2Parent"]
# Backbone elements have no entry of their own in path2Type, only their children do.
_BACKBONES = frozenset(p.rsplit(".", i)[0] for p in _PATH_TYPE for i in range(1, p.count(".")))
_SYSTEM_TYPES = {"System.String": "string", "System.Boolean": "boolean", "System.Integer": "integer",
                 "System.Decimal": "decimal", "System.Date": "date", "System.DateTime": "dateTime",
                 "System.Time": "time"}
RESOURCE_SUPERTYPES = ("Resource", "DomainResource")


class Unsupported(Exception):
    """The expression uses FHIRPath beyond the compiled subset (the caller falls back)."""


# --- types -------------------------------------------------------------------------------------

def fhir_type_name(choice_suffix: str) -> str:
    """``DateTime`` (as in ``valueDateTime``) -> ``dateTime``; complex types keep their case."""
    lowered = choice_suffix[0].lower() + choice_suffix[1:]
    return lowered if lowered in _PARENT and _PARENT.get(lowered) in ("Element", "string", "uri", "integer") \
        else choice_suffix


def is_subtype(actual: str | None, wanted: str) -> bool:
    """FHIRPath ``is``/``as`` over FHIR types: ``Age`` is a ``Quantity``; names compare
    case-insensitively so ``DateTime`` (System type spelling) matches ``dateTime``."""
    wanted_l = wanted.lower()
    seen = 0
    while actual is not None and seen < 10:
        if actual.lower() == wanted_l:
            return True
        actual = _PARENT.get(actual)
        seen += 1
    return False


@lru_cache(maxsize=None)
def child_types(parent: str | None, name: str) -> tuple[tuple[str, str | None], ...]:
    """(JSON key, FHIR type) pairs that element ``name`` of type ``parent`` can appear as.

    A choice element yields one pair per allowed type (``effective`` -> ``effectiveDateTime`` …);
    a backbone element's "type" is its path (``Observation.component``); unknown -> type None.
    """
    current = parent
    while current is not None:
        path = f"{current}.{name}"
        path = _ELSEWHERE.get(path, path)
        if path in _CHOICES:
            return tuple((name + t, fhir_type_name(t)) for t in _CHOICES[path])
        if path in _PATH_TYPE:
            t = _PATH_TYPE[path]
            if t in ("BackboneElement", "Element"):
                return ((name, path),)
            return ((name, _SYSTEM_TYPES.get(t, t)),)
        if path in _BACKBONES:
            return ((name, path),)
        current = _PARENT.get(current)
    return ((name, None),)


# --- tokenizer and parser ----------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""
    \s*(?:
      (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    | (?P<var>[%$][A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>!=|<=|>=|!~|[.()\[\]|=,<>~+\-*/&])
    )""", re.VERBOSE)


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot tokenize at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


@dataclass(frozen=True)
class Node:
    kind: str  # root, member, index, call, union, and, or, eq, ne, is, as, literal, var
    args: tuple[Any, ...] = ()


class _Parser:
    """Recursive descent over the FHIRPath grammar's precedence levels (fhirpath.html#operator-precedence)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def parse(self) -> Node:
        node = self.or_expr()
        if self.i != len(self.tokens):
            raise Unsupported(f"unexpected {self.tokens[self.i][1]!r}")
        return node

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise Unsupported(f"expected {value!r}, got {tok!r}")
        self.i += 1
        return tok

    def at(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] in values and tok[0] in ("op", "id")

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.at("or"):
            self.take()
            node = Node("or", (node, self.and_expr()))
        return node

    def and_expr(self) -> Node:
        node = self.eq_expr()
        while self.at("and"):
            self.take()
            node = Node("and", (node, self.eq_expr()))
        return node

    def eq_expr(self) -> Node:
        node = self.union_expr()
        while self.at("=", "!="):
            op = self.take()[1]
            node = Node("eq" if op == "=" else "ne", (node, self.union_expr()))
        if self.at("<", ">", "<=", ">=", "~", "!~", "in", "contains", "implies", "xor"):
            raise Unsupported(f"operator {self.peek()!r}")
        return node

    def union_expr(self) -> Node:
        node = self.type_expr()
        while self.at("|"):
            self.take()
            node = Node("union", (node, self.type_expr()))
        return node

    def type_expr(self) -> Node:
        node = self.invocation()
        while self.at("is", "as"):
            op = self.take()[1]
            node = Node(op, (node, self._type_name()))
        if self.at("+", "-", "*", "/", "&"):
            raise Unsupported("arithmetic")
        return node

    def _type_name(self) -> str:
        kind, name = self.take()
        if kind != "id":
            raise Unsupported("type name expected")
        while self.at("."):  # FHIR.Patient / System.String
            self.take()
            name = self.take()[1]
        return name.strip("`")

    def invocation(self) -> Node:
        node = self.term()
        while True:
            if self.at("."):
                self.take()
                node = self._member_or_call(node)
            elif self.at("["):
                self.take()
                kind, value = self.take()
                if kind != "num" or "." in value:
                    raise Unsupported("only literal integer indexes")
                self.take("]")
                node = Node("index", (node, int(value)))
            else:
                return node

    def term(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        kind, value = tok
        if value == "(" and kind == "op":
            self.take()
            node = self.or_expr()
            self.take(")")
            return node
        if kind == "str":
            self.take()
            return Node("literal", (_unquote(value), "string"))
        if kind == "num":
            self.take()
            return Node("literal", (int(value), "integer") if "." not in value else (Decimal(value), "decimal"))
        if kind == "id" and value in ("true", "false"):
            self.take()
            return Node("literal", (value == "true", "boolean"))
        if kind == "var":
            self.take()
            if value in ("%resource", "%context", "%rootResource", "$this"):
                return Node("var", (value,))
            raise Unsupported(f"variable {value}")
        if kind == "id":
            return self._member_or_call(Node("root"))
        raise Unsupported(f"unexpected {value!r}")

    def _member_or_call(self, src: Node) -> Node:
        kind, name = self.take()
        if kind != "id":
            raise Unsupported(f"identifier expected, got {name!r}")
        name = name.strip("`")
        if self.at("("):
            self.take()
            args: list[Any] = []
            if name in ("as", "ofType", "is"):
                args.append(self._type_name())
            elif not self.at(")"):
                args.append(self.or_expr())
                while self.at(","):
                    self.take()
                    args.append(self.or_expr())
            self.take(")")
            return Node("call", (src, name, tuple(args)))
        return Node("member", (src, name))


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


def parse(expression: str) -> Node:
    """Parse the supported FHIRPath subset; raises :class:`Unsupported` otherwise."""
    return _Parser(expression).parse()
