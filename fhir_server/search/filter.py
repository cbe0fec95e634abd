"""The ``_filter`` search parameter (R4 search_filter.html): text → syntax tree. Pure.

``parse_filter`` is a hand-written recursive-descent parser of the spec's grammar::

    filter    = term *( SP ("and" / "or") SP term )   ; left to right, no precedence (#notes)
    term      = "(" filter ")" / "not" "(" filter ")" / paramExp
    paramExp  = paramPath SP compareOp SP compValue
    paramPath = paramName [ "[" filter "]" ] [ "." paramPath ]
    compValue = JSON string / token                   ; token: no whitespace, ")" or "]"

The tree is bound to search parameters by ``search.filter_bind``, turned into SQL by
``search.filter_sql``; ``search.filter_terminology`` resolves ValueSets and subsumption.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..errors import BadRequest

FILTER = "_filter"
MAX_DEPTH = 16  # nesting of parentheses, not(), [ ] and chains: a bound on recursion

# search_filter.html#ops
OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "ap", "sa", "eb", "pr", "po",
                       "ss", "sb", "in", "ni", "re"})

class FilterError(BadRequest):
    """A ``_filter`` that cannot be parsed or bound: 400, naming the 1-based position."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"_filter: {message} at position {position}", expression=FILTER)
        self.position = position


# -- syntax tree -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PathStep:
    name: str
    position: int
    filter: "Node | None" = None  # name[filter]


@dataclass(frozen=True)
class Comparison:
    """``paramPath compareOp compValue``; ``quoted`` when the value was a JSON string."""

    path: tuple[PathStep, ...]
    op: str
    value: str
    quoted: bool
    op_position: int
    value_position: int


@dataclass(frozen=True)
class Logical:
    op: str  # and | or
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Not:
    operand: "Node"


Node = Union[Comparison, Logical, Not]


def parse_filter(text: str) -> Node:
    """Parse a ``_filter`` value (search_filter.html#grammar). Operators and the words ``and``,
    ``or``, ``not`` are read case-insensitively; parameter names are case-sensitive as everywhere
    in search. Raises FilterError with the position of the first offending character."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def parse(self) -> Node:
        self._ws()
        if self.pos >= len(self.text):
            raise self._error("the filter is empty")
        node = self._filter()
        self._ws()
        if self.pos < len(self.text):
            raise self._error(f"unexpected '{self.text[self.pos]}'"
                              + (" (unbalanced parenthesis)" if self.text[self.pos] in ")]" else ""))
        return node

    # -- grammar ---------------------------------------------------------------------------------

    def _filter(self) -> Node:
        self._enter()
        left = self._term()
        while True:
            start = self.pos
            had_space = self._ws()
            word_at = self.pos
            word = self._word().lower()
            if word in ("and", "or") and (had_space or self.text[start - 1:start] == ")"):
                if not self._ws() and self._peek() not in ("(", ""):
                    raise self._error(f"expected whitespace after '{word}'")
                left = Logical(word, left, self._term())
                continue
            if word:
                self.pos = word_at
                raise self._error(f"expected 'and', 'or' or the end of the filter, not '{self._lexeme()}'")
            self.pos = start
            self.depth -= 1
            return left

    def _term(self) -> Node:
        self._ws()
        if self._peek() == "(":
            return self._group()
        start = self.pos
        if self._word().lower() == "not":
            self._ws()
            if self._peek() == "(":
                return Not(self._group())
            raise self._error("expected '(' after 'not'")
        self.pos = start
        return self._comparison()

    def _group(self) -> Node:
        self.pos += 1  # "("
        self._ws()
        inner = self._filter()
        self._ws()
        self._expect(")")
        return inner

    def _comparison(self) -> Comparison:
        path = self._path()
        if not self._ws():
            raise self._error("expected whitespace and an operator after the parameter name"
                              if self.pos < len(self.text) else "expected an operator")
        op_at = self.pos
        op = self._word().lower()
        if op not in OPERATORS:
            found = self._lexeme(op_at)
            raise self._error(f"unknown operator '{found}'" if found else "expected an operator", op_at)
        if not self._ws():
            raise self._error(f"expected whitespace and a value after '{op}'")
        value_at = self.pos
        if self._peek() == '"':
            value, quoted = self._json_string(), True
        else:
            value, quoted = self._token(), False
        return Comparison(path, op, value, quoted, op_at + 1, value_at + 1)

    def _path(self) -> tuple[PathStep, ...]:
        steps = []
        while True:
            at = self.pos
            name = self._name()
            if not name:
                raise self._error("expected a search parameter name" if self.pos < len(self.text)
                                  else "expected a search parameter name, the filter ended")
            sub = None
            if self._peek() == "[":
                self.pos += 1
                self._enter()
                self._ws()
                sub = self._filter()
                self._ws()
                self._expect("]")
                self.depth -= 1
            steps.append(PathStep(name, at + 1, sub))
            if self._peek() != ".":
                return tuple(steps)
            self.pos += 1

    # -- lexical ---------------------------------------------------------------------------------

    def _name(self) -> str:
        """paramName = ("_" / ALPHA) *("_" / "-" / DIGIT / ALPHA)"""
        start = self.pos
        if self.pos < len(self.text) and (self.text[self.pos] == "_" or _alpha(self.text[self.pos])):
            self.pos += 1
            while self.pos < len(self.text) and (self.text[self.pos] in "_-" or _alpha(self.text[self.pos])
                                                 or self.text[self.pos].isdigit()):
                self.pos += 1
        return self.text[start:self.pos]

    def _word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _alpha(self.text[self.pos]):
            self.pos += 1
        return self.text[start:self.pos]

    def _token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace() and self.text[self.pos] not in ")]":
            self.pos += 1
        if self.pos == start:
            raise self._error("expected a value")
        return self.text[start:self.pos]

    def _json_string(self) -> str:
        """A JSON string (RFC 8259 §7): ``\\"`` ``\\\\`` ``\\/`` ``\\b`` ``\\f`` ``\\n`` ``\\r`` ``\\t``
        and ``\\uXXXX`` escapes."""
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                esc = self.text[self.pos + 1:self.pos + 2]
                if esc in _JSON_ESCAPES:
                    out.append(_JSON_ESCAPES[esc])
                    self.pos += 2
                    continue
                if esc == "u":
                    digits = self.text[self.pos + 2:self.pos + 6]
                    if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                        out.append(chr(int(digits, 16)))
                        self.pos += 6
                        continue
                raise self._error("invalid escape in string (use \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)")
            out.append(ch)
            self.pos += 1
        raise self._error("unterminated string", start)

    def _ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.pos > start

    def _peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def _expect(self, ch: str) -> None:
        if self._peek() != ch:
            found = f"'{self._peek()}'" if self._peek() else "the end of the filter"
            raise self._error(f"expected '{ch}', found {found}")
        self.pos += 1

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._error(f"the filter nests deeper than {MAX_DEPTH}")

    def _lexeme(self, at: int | None = None) -> str:
        at = self.pos if at is None else at
        end = at
        while end < len(self.text) and not self.text[end].isspace():
            end += 1
        return self.text[at:end]

    def _error(self, message: str, at: int | None = None) -> FilterError:
        return FilterError(message, (self.pos if at is None else at) + 1)


_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _alpha(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()
