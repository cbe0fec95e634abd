"""Merging a mapped resource into the stored one it updates, for upserts in ``merge`` mode.

Two formats of one agency can describe the same resource with different elements: the CIN census
and SSDA903 return of a local authority both write the child's Patient (matched on the LA child id),
but only the census carries the NHS number and disabilities. A plain conditional update replaces the
whole resource (http.html#update), so each import would drop what the other wrote and the next one
would put it back, a new version every time. A merging upsert is combined with what is stored first:

- a top-level element present in the new resource wins; one absent from it is kept from the stored
  one. A choice element (``deceased[x]``) and a primitive's ``_`` twin (``_gender``) count as one
  element, so a new ``deceasedBoolean`` replaces a stored ``deceasedDateTime``;
- ``identifier``: the union by ``system`` (the new identifiers of a system replace the stored ones);
- ``extension`` / ``modifierExtension``: the union by ``url`` (the new extensions of a url replace the
  stored ones, so a repeating extension such as a disability is replaced as a whole);
- an extension whose value carries the ``value-source`` mark (the format that gave it: the
  ethnicity the CIN census and the SSDA903 return both give) is not replaced by a new one it
  outranks (:func:`rank`): a known code above an unknown one kept as text above "not yet
  obtained", then the format later in ``FORMAT_PRECEDENCE``. On a tie (an equally informative value
  of the same format: a later year's or a corrected return) the new value wins, as for any element.
  So a value two formats disagree on is the one that ranks highest, whichever file was imported last;
- ``meta``: the new keys win, except ``tag``, the union by (system, code); the server's own
  ``versionId`` and ``lastUpdated`` are dropped.

Lists keep the stored order, with what is new appended, so that the merged resource does not depend
on which format wrote last: importing the same files again in any order changes nothing.

The price: an element can no longer be removed through a merging format (docs/formats/README.md).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir_server.search.fhirpath import child_types

from . import codes
from .fhir_shapes import EXT_VALUE_SOURCE

SERVER_META = ("versionId", "lastUpdated")
UNION_BY = {"identifier": ("system",), "extension": ("url",), "modifierExtension": ("url",)}
# Of two formats that give a value equally informative, the later one here wins. No reference date
# takes part: a mark holding one would rewrite every Patient with each new (or, for SSDA903, whose
# year is inferred from its dates, corrected) return.
FORMAT_PRECEDENCE = ("ssda903", "cin-census")


def merge_resource(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` completed with what ``stored`` has and ``new`` lacks (module docstring); pure."""
    res_type = str(new["resourceType"])
    replaced = {element_of(res_type, key) for key in new}
    out = {key: value for key, value in stored.items()
           if key != "id" and element_of(res_type, key) not in replaced}
    for key, value in new.items():
        if key in UNION_BY and isinstance(stored.get(key), list) and isinstance(value, list):
            if key == "extension":
                value = _keep_outranking(stored[key], value)
            out[key] = union(stored[key], value, UNION_BY[key])
        elif key == "meta" and isinstance(stored.get("meta"), dict) and isinstance(value, dict):
            out[key] = _meta(stored["meta"], value)
        else:
            out[key] = value
    if "meta" in out and "meta" not in new:
        meta = {k: v for k, v in out["meta"].items() if k not in SERVER_META}
        if meta:
            out["meta"] = meta
        else:
            del out["meta"]
    return out


def union(stored: list[Any], new: list[Any], key: tuple[str, ...]) -> list[Any]:
    """The items of ``stored`` and ``new`` by ``key``: the new items of a key replace the stored
    ones, in the place of the first stored item of that key; new keys are appended in their order."""
    def key_of(item: Any) -> Any:
        return tuple(item.get(k) for k in key) if isinstance(item, dict) else ("", repr(item))

    fresh: dict[Any, list[Any]] = {}
    for item in new:
        fresh.setdefault(key_of(item), []).append(item)
    out: list[Any] = []
    placed: set[Any] = set()
    for item in stored:
        k = key_of(item)
        if k not in fresh:
            out.append(item)
        elif k not in placed:
            out += fresh[k]
            placed.add(k)
    for k, items in fresh.items():
        if k not in placed:
            out += items
    return out


def _keep_outranking(stored: list[Any], new: list[Any]) -> list[Any]:
    """``new`` with the extensions of each url whose stored ones outrank them put back as stored."""
    out: list[Any] = []
    done: set[str] = set()
    for ext in new:
        url = ext.get("url") if isinstance(ext, dict) else None
        if url is None:
            out.append(ext)
            continue
        if url in done:
            continue
        mine = [e for e in new if isinstance(e, dict) and e.get("url") == url]
        theirs = [e for e in stored if isinstance(e, dict) and e.get("url") == url]
        out += theirs if theirs and outranks(theirs, mine) else mine
        done.add(url)
    return out


def outranks(stored: list[Any], new: list[Any]) -> bool:
    """Whether every extension on both sides carries a ``value-source`` mark and the stored ones'
    best :func:`rank` is above the new ones' best. An unmarked value (written before the mark
    existed, or by a format without one) never outranks and is never outranked."""
    ranks_stored = [rank(e) for e in stored]
    ranks_new = [rank(e) for e in new]
    if None in ranks_stored or None in ranks_new:
        return False
    return max(ranks_stored) > max(ranks_new)  # type: ignore[type-var]


def rank(ext: Any) -> tuple[int, int] | None:
    """How a marked value ranks, highest first by: what it says (a known code 2, an unknown code
    kept as text 1, a code that says nothing is known yet, such as ethnicity ``NOBT``, 0); its
    format in ``FORMAT_PRECEDENCE``. None without a mark."""
    values = [v for k, v in ext.items() if k.startswith("value") and isinstance(v, dict)] \
        if isinstance(ext, dict) else []
    for value in values:
        for mark in value.get("extension", []):
            if isinstance(mark, dict) and mark.get("url") == EXT_VALUE_SOURCE:
                fmt = mark.get("valueCode")
                return _says(value), FORMAT_PRECEDENCE.index(fmt) if fmt in FORMAT_PRECEDENCE else -1
    return None


def _says(concept: dict[str, Any]) -> int:
    codings = [c for c in concept.get("coding", []) if isinstance(c, dict)]
    if not codings:
        return 1
    if all((c.get("system"), c.get("code")) in _no_information() for c in codings):
        return 0
    return 2


@lru_cache(maxsize=1)
def _no_information() -> frozenset[tuple[str, str]]:
    """Codes that record that the value is not known (yet): any other value of a return ranks above."""
    return frozenset({(codes.code_system("cin-ethnicity")["url"], "NOBT")})


def _meta(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in stored.items() if k not in SERVER_META}
    out.update(new)
    if isinstance(stored.get("tag"), list) and isinstance(new.get("tag"), list):
        out["tag"] = union(stored["tag"], new["tag"], ("system", "code"))
    return out


@lru_cache(maxsize=4096)
def element_of(res_type: str, key: str) -> str:
    """The element a JSON key belongs to: ``_gender`` → ``gender``, ``deceasedDateTime`` →
    ``deceased`` (json.html#primitive, formats.html#choice)."""
    name = key[1:] if key.startswith("_") else key
    for i in range(1, len(name)):
        if name[i].isupper():
            stem = name[:i]
            keys = {k for k, _type in child_types(res_type, stem)}
            if len(keys) > 1 and name in keys:
                return stem
    return name
