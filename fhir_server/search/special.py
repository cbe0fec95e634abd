"""The special parameters defined for every resource that this server answers from its own tables
(search.html#all): ``_text`` and ``_content`` (full text, search/text.py) and ``_list``.

``_list=42`` (search.html#list) selects the resources that are items (``List.entry.item``) of the
current ``List/42``, using the ``idx_reference`` rows of the List's ``item`` parameter; ``List/42``
is accepted too. Functional lists (``_list=$current-problems``) are not kept, so they are refused
with a 400 rather than answered with nothing.

They apply to type and whole-system searches, take no modifier, and a comma ORs their values.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, FromClause, exists, false, literal, select

from ..errors import BadRequest
from ..storage.tables import idx_reference, idx_text, resource
from .model import SearchParam
from .registry import NOT_DOMAIN_RESOURCES
from .text import CONTENT_PARAM, TEXT_PARAM, TextMatch, TextQuery, parse_text_query

LIST_PARAM = "_list"
SPECIAL_PARAMS: dict[str, SearchParam] = {
    TEXT_PARAM: SearchParam(TEXT_PARAM, "string", "DomainResource", "",
                            "http://hl7.org/fhir/SearchParameter/DomainResource-text",
                            description="Search on the narrative of the resource"),
    CONTENT_PARAM: SearchParam(CONTENT_PARAM, "string", "Resource", "",
                               "http://hl7.org/fhir/SearchParameter/Resource-content",
                               description="Search on the entire content of the resource"),
    LIST_PARAM: SearchParam(LIST_PARAM, "special", "Resource", "", "",
                            description="Resources that are items of the List with this id"),
}
_DOCUMENTATION = {
    TEXT_PARAM: "Words of the narrative (text.div, tags stripped): all space-separated words must appear, "
                "whole words, case- and accent-insensitive; `OR` between two words accepts either.",
    CONTENT_PARAM: "Words of all the text of the resource, as for _text: all words must appear; `OR` "
                   "between two words accepts either.",
    LIST_PARAM: "Resources that are items (List.entry.item) of the List with this id (`_list=42`); "
                "functional lists ($current-problems) are not supported.",
}
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class ListValue:
    list_id: str


@dataclass(frozen=True)
class SpecialCriterion:
    """``_text``/``_content`` (one :class:`TextQuery`) or ``_list`` (list ids, ORed)."""

    name: str
    param: SearchParam
    text: TextQuery | None = None
    lists: tuple[ListValue, ...] = ()

    @property
    def reads(self) -> tuple[str, ...]:
        """Resource types the criterion looks into besides the searched ones (access checks)."""
        return ("List",) if self.param.code == LIST_PARAM else ()


def capability_search_params(res_type: str | None) -> list[dict[str, Any]]:
    """CapabilityStatement.rest(.resource).searchParam entries for the special parameters that
    apply to ``res_type`` (None: whole-system search)."""
    out = []
    for code, param in SPECIAL_PARAMS.items():
        if code == TEXT_PARAM and res_type in NOT_DOMAIN_RESOURCES:
            continue  # no narrative
        entry = {"name": code, "definition": param.url, "type": param.type, "documentation": _DOCUMENTATION[code]}
        out.append({k: v for k, v in entry.items() if v})
    return out


def special_applies(code: str, res_type: str) -> bool:
    """Whether special parameter ``code`` is defined for ``res_type``: ``_text`` is a DomainResource
    parameter (no narrative on Bundle, Binary, Parameters), ``_content`` and ``_list`` Resource ones."""
    return not (code == TEXT_PARAM and res_type in NOT_DOMAIN_RESOURCES)


def parse_special(name: str, value: str, split: Callable[[str, str], list[str]],
                  unescape: Callable[[str], str], *, expression: str | None = None) -> SpecialCriterion:
    """Parse ``name=value`` for one of :data:`SPECIAL_PARAMS`; ``split``/``unescape`` are
    search.parse's comma splitting and unescaping (search.html#escaping). ``expression`` is the
    parameter as the client wrote it when ``name`` ends a chain or ``_has`` (search.html#chaining)."""
    full = expression or name
    code, colon, modifier = name.partition(":")
    if colon:
        raise BadRequest(f"Modifier ':{modifier}' is not supported on {code}", expression=full)
    pieces = [unescape(p) for p in split(value, ",") if p.strip()]
    param = SPECIAL_PARAMS[code]
    if not pieces:
        raise BadRequest(f"No value for '{full}'", expression=full)
    if code == LIST_PARAM:
        return SpecialCriterion(full, param, lists=tuple(_list_value(full, p.strip()) for p in pieces))
    return SpecialCriterion(full, param, text=parse_text_query(full, pieces))


def _list_value(name: str, raw: str) -> ListValue:
    if raw.startswith("$"):
        raise BadRequest(f"Functional list '{raw}' is not supported: name a List by its id", expression=name)
    list_id = raw[len("List/"):] if raw.startswith("List/") else raw
    if not list_id or len(list_id) > 64 or not set(list_id) <= _ID_CHARS:
        raise BadRequest(f"'{raw}' is not a List id", expression=name)
    return ListValue(list_id)


def special_clause(res: FromClause, rtype: str | None, crit: SpecialCriterion,
                   access: Any = None) -> ColumnElement[bool]:
    """The condition that resource row ``res`` (of type ``rtype``, None = any) meets ``crit``.
    ``access`` (SearchRequest.access) limits the Lists ``_list`` reads to those the caller may see:
    a withheld List must not reveal what it holds."""
    if crit.text is not None:
        t = idx_text.alias()
        where = [t.c.param == crit.param.code, TextMatch(t.c.words, crit.text)]
        if rtype:
            return res.c.pk.in_(select(t.c.resource_pk).where(t.c.res_type == literal(rtype), *where))
        return exists().where(t.c.resource_pk == res.c.pk, t.c.res_type == res.c.res_type, *where)
    if not crit.lists:
        return false()
    r = idx_reference.alias()
    lst = resource.alias()
    items = [lst.c.res_type == "List", lst.c.res_id.in_([v.list_id for v in crit.lists]),
             lst.c.deleted == false(), r.c.resource_pk == lst.c.pk, r.c.res_type == "List", r.c.param == "item"]
    if access is not None:
        items.append(access.clause(lst))
    if rtype:  # drive from the List's few items, then the (res_type, res_id) index
        return res.c.res_id.in_(select(r.c.target_id).where(r.c.target_type == literal(rtype), *items))
    return exists().where(r.c.target_type == res.c.res_type, r.c.target_id == res.c.res_id, *items)
