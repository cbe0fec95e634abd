"""``_text`` and ``_content`` (search.html#text): full-text search on the narrative and on all the
text of a resource.

Write side (pure): :func:`text_rows` turns a resource into at most two ``idx_text`` rows whose
``words`` column is the resource's distinct words, folded like string search (lower case, accents
stripped, search.html#string) and written ``" w1 w2 … "``: the narrative ``text.div`` with its tags
stripped for ``_text``; every string in the resource (the narrative's words included, ``meta``,
element ids and binary ``data`` left out) for ``_content``.

Read side: :func:`parse_text_query` turns the search value into a :class:`TextQuery` and
:func:`text_condition` into SQL. The rules, which the CapabilityStatement documents:

* words separated by spaces must all appear (whole words, case- and accent-insensitive);
* ``OR`` (upper case) between two words accepts either: ``bruise OR burn injury`` is
  (bruise or burn) and injury — OR binds tighter than the implicit AND;
* a comma separates alternatives, as for every parameter (search.html#combining).

PostgreSQL answers from a GIN index over ``to_tsvector('simple', words)`` (the ``simple``
configuration: no stemming, no stop words, so it agrees with SQLite); SQLite matches
``' word '`` with LIKE over the rows of the searched type.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, func, literal_column, or_
from sqlalchemy.ext.compiler import compiles

from ..errors import BadRequest
from .normalize import normalize_string

TEXT_PARAM = "_text"
CONTENT_PARAM = "_content"
# The words of one resource are cut to this many characters (a tsvector must stay below 1 MB).
MAX_WORDS_LENGTH = 200_000
# Keys whose values are not text a person would search for.
_SKIPPED_KEYS = frozenset({"meta", "id", "data", "div", "resourceType"})
_WORD_SPLIT = re.compile(r"[\W_]+")
_TAG = re.compile(r"<[^>]*>")
_SIMPLE = literal_column("'simple'::regconfig")


# ASCII letters and digits to themselves (lower-cased), every other byte to a space.
_ASCII_WORDS = bytes(ord(chr(b).lower()) if chr(b).isalnum() and b < 128 else 32 for b in range(256))


def words_of(text: str) -> list[str]:
    """The folded words of ``text`` in order (duplicates kept): letters and digits only."""
    if text.isascii():  # the common case, ten times cheaper than the regular expression
        return text.encode().translate(_ASCII_WORDS).decode().split()
    return [w for w in _WORD_SPLIT.split(normalize_string(text)) if w]


def narrative_text(div: str) -> str:
    """The text of an XHTML narrative: tags removed, entities decoded (narrative.html)."""
    return html.unescape(_TAG.sub(" ", div))


def _joined(words: list[str]) -> str | None:
    distinct = list(dict.fromkeys(words))
    if not distinct:
        return None
    out = " " + " ".join(distinct) + " "
    if len(out) > MAX_WORDS_LENGTH:
        out = out[:out.rfind(" ", 0, MAX_WORDS_LENGTH) + 1]
    return out


def _strings(value: Any, out: list[str]) -> None:
    # Plain strings are taken where they are met, without a call each (the walk of every resource).
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _SKIPPED_KEYS:
                if type(item) is str:
                    out.append(item)
                else:
                    _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            if type(item) is str:
                out.append(item)
            else:
                _strings(item, out)


def text_rows(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``idx_text`` rows (``param``, ``words``) of a resource: ``_text`` when it has a
    narrative with words, ``_content`` when it has any text at all."""
    rows = []
    narrative_words: list[str] = []
    text = resource.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        narrative_words = words_of(narrative_text(text["div"]))
        joined = _joined(narrative_words)
        if joined:
            rows.append({"param": TEXT_PARAM, "words": joined})
    strings: list[str] = []
    _strings(resource, strings)
    content = _joined(words_of(" ".join(strings)) + narrative_words)
    if content:
        rows.append({"param": CONTENT_PARAM, "words": content})
    return rows


@dataclass(frozen=True)
class TextQuery:
    """A parsed ``_text``/``_content`` value: OR over ``alternatives`` (the comma-separated
    values); each alternative is an AND of groups, each group an OR of words."""

    alternatives: tuple[tuple[tuple[str, ...], ...], ...]


def parse_text_query(name: str, pieces: list[str]) -> TextQuery:
    """Parse the (comma-split, unescaped) values of ``_text``/``_content``; BadRequest naming the
    parameter when a value has no word to search for."""
    alternatives = []
    for piece in pieces:
        groups: list[list[str]] = []
        join_next = False
        for token in piece.split():
            if token == "OR":
                join_next = bool(groups)
                continue
            if token == "AND":
                join_next = False
                continue
            words = words_of(token)
            if not words:
                continue
            # "o'brien" folds to two words: both must appear; OR joins the first of them.
            if join_next and groups:
                groups[-1].append(words[0])
                groups.extend([w] for w in words[1:])
            else:
                groups.extend([w] for w in words)
            join_next = False
        if not groups:
            raise BadRequest(f"'{name}' value '{piece}' has no word to search for", expression=name)
        alternatives.append(tuple(tuple(dict.fromkeys(g)) for g in groups))
    if not alternatives:
        raise BadRequest(f"No value for '{name}'", expression=name)
    return TextQuery(tuple(alternatives))


class TextMatch(ColumnElement[bool]):
    """``words_column`` holds the words of ``query`` as it requires; rendered per dialect (the
    query layer is dialect-neutral): a tsquery over the GIN-indexed tsvector on PostgreSQL, LIKE
    elsewhere."""

    inherit_cache = False
    type = Boolean()

    def __init__(self, words_column: Any, query: TextQuery) -> None:
        self.words_column = words_column
        self.query = query


@compiles(TextMatch, "postgresql")
def _match_postgresql(element: TextMatch, compiler: Any, **kw: Any) -> str:
    tsquery = " | ".join(
        "(" + " & ".join("(" + " | ".join(f"'{w}'" for w in group) + ")" for group in alternative) + ")"
        for alternative in element.query.alternatives)
    vector = func.to_tsvector(_SIMPLE, element.words_column)
    return compiler.process(vector.op("@@")(func.to_tsquery(_SIMPLE, tsquery)), **kw)


@compiles(TextMatch)
def _match_like(element: TextMatch, compiler: Any, **kw: Any) -> str:
    col = element.words_column
    cond = or_(*(and_(*(or_(*(col.like(f"% {w} %") for w in group)) for group in alternative))
                 for alternative in element.query.alternatives))
    return compiler.process(cond, **kw)
